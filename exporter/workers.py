"""Pages read and prepared in worker processes, handed back in order, so an export uses every
core.

Reading a page (its calls from the database, its archived rows decoded) and preparing it
(``exporter.prepared``) is most of an export's work and needs no other page, so the export
lists the pages (``exporter.selection.Work``: a span of keys, and the spans of archived files
that fall in it) and ``prepared_pages`` hands them to a pool of worker processes, each with
its own connection to the database, yielding the results in the pages' order with two pages
per worker in flight; the export's process lists the next pages and makes the decisions
meanwhile. A page goes to a worker alone, or with the pages after it that read the same
archived row group (a job), so that the group is decoded once. The first pages are read and
prepared in the export's own process when they hold few calls (the export looks ahead up to
``INLINE_CALLS``): an export of 20,000 calls or fewer never starts a worker (one costs about a
second to start, each its own Python with numpy and the tokenizer loaded), and a larger one is
prepared by workers alone.

Workers are spawned, not forked: the export's process runs an event loop and may hold a
database driver's threads, which a fork would copy in whatever state they were in. Each is
given the ``Plan``, the database's URL and the filters once; a page goes as its spans, and
comes back as columns. A worker that dies (killed for memory, say) fails
the export with a clear error; one that cannot read the database fails it as the export's own
reading would. Nothing is written then, as with any failed export.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import multiprocessing
import os
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.process import BaseProcess
from multiprocessing.util import Finalize
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from capture.engine import create_engine
from exporter.errors import DatabaseUnavailable, WorkerFailed
from exporter.filters import Filters
from exporter.no_pandas import keep_pandas_out
from exporter.prepared import Plan, PreparedPage, Preparer
from exporter.selection import Work, read_work

INLINE_CALLS = 20_000
"""An export of at most this many calls (and at most ``MIN_INLINE_PAGES`` pages, whichever is
more) is read and prepared in its own process: about 2 s of work, less than starting workers."""
MIN_INLINE_PAGES = 3
AHEAD = 2
"""Pages in flight per worker (and always a job more than there are workers)."""
JOB_PAGES = 2
"""At most this many pages of one archived row group go to a worker as one job (the
archiver's row groups are four pages of 1,000 calls): a job's pages wait in the export's
process until they are taken, 2 MB a page of 1,000 calls, so jobs stay small; a group is then
decoded by at most two workers (decoding is ~5% of a worker's time)."""
_GC_THRESHOLD = 50_000


class _Worker:
    """A worker process's own preparer, event loop and database engine."""

    def __init__(self, plan: Plan, url: str, filters: Filters) -> None:
        self.preparer = Preparer(plan)
        self.filters = filters
        self.loop = asyncio.new_event_loop()
        self.engine = create_engine(url)
        Finalize(self, self.close, exitpriority=10)

    def close(self) -> None:
        self.loop.run_until_complete(self.engine.dispose())
        self.loop.close()

    def prepare(self, work: Work) -> PreparedPage:
        try:
            rows = self.loop.run_until_complete(read_work(self.engine, self.filters, work))
        except (OSError, SQLAlchemyError) as exc:  # pickled back as one line, not the driver's
            first = (str(exc).strip() or type(exc).__name__).splitlines()[0][:300]
            raise DatabaseUnavailable(f"a worker's read failed: {first}") from None
        return self.preparer.page(rows)


_worker: _Worker | None = None


def default_workers() -> int:
    """One worker per CPU this process may run on; none on a single CPU (the export's own
    process then prepares every page)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return cpus if cpus > 1 else 0


def _start(plan: Plan, url: str, filters: Filters) -> None:
    global _worker
    gc.set_threshold(_GC_THRESHOLD)  # pages are trees of dicts freed by reference counting
    keep_pandas_out()  # this process reads the archive, prepares pages, and nothing else
    _worker = _Worker(plan, url, filters)


def _prepare(job: list[Work]) -> list[PreparedPage]:
    if _worker is None:  # pragma: no cover - the initializer always ran
        raise RuntimeError("worker not started")
    pages = [_worker.prepare(work) for work in job]
    trim_heap()
    return pages


def trim_heap() -> None:
    """Give the C heap's free memory back to the system (glibc keeps what a job's rows and
    Arrow buffers freed: 40 MB of a worker reading the archive); nothing without glibc."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except OSError:  # not glibc
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


def _row_groups(work: Work) -> set[tuple[str, int]]:
    """The archived row groups a page reads (none for a page of the database alone)."""
    return {
        (span.path, number)
        for span in work.archived
        if span.groups is not None
        for number in range(span.groups[0], span.groups[1] + 1)
    }


async def _jobs(works: AsyncIterator[Work]) -> AsyncIterator[list[Work]]:
    """``works`` in jobs for the workers: a page alone, or consecutive pages that read the same
    archived row group (at most ``JOB_PAGES``), so that one worker decodes the group once."""
    job: list[Work] = []
    groups: set[tuple[str, int]] = set()
    async for work in works:
        read = _row_groups(work)
        if job and (not read or not read & groups or len(job) >= JOB_PAGES):
            yield job
            job, groups = [], set()
        job.append(work)
        groups = read if len(job) == 1 else groups | read
    if job:
        yield job


async def prepared_pages(
    works: AsyncIterator[Work],
    engine: AsyncEngine,
    filters: Filters,
    plan: Plan,
    workers: int,
    page_size: int,
) -> AsyncGenerator[PreparedPage, None]:
    """The pages of ``works`` (of ``page_size`` calls) read and prepared, in order: here (with
    ``engine``) when they hold at most ``INLINE_CALLS`` calls or ``workers`` is 0, else all by
    ``workers`` processes (this process then loads no tokenizer)."""
    inline_pages = max(MIN_INLINE_PAGES, INLINE_CALLS // max(page_size, 1))
    head: list[Work] = []
    if workers >= 1:
        async for work in works:
            head.append(work)
            if len(head) > inline_pages:
                break
    if workers < 1 or len(head) <= inline_pages:
        inline = Preparer(plan)
        for work in head:  # the whole listing: it ended
            yield inline.page(await read_work(engine, filters, work))
        async for work in works:  # without workers
            yield inline.page(await read_work(engine, filters, work))
        return
    url = engine.url.render_as_string(hide_password=False)
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start,
        initargs=(plan, url, filters),
    )
    pending: deque[asyncio.Future[list[PreparedPage]]] = deque()
    in_flight = 0
    finished = False
    try:
        async for job in _jobs(_chained(head, works)):
            try:
                pending.append(asyncio.wrap_future(pool.submit(_prepare, job)))
            except (BrokenProcessPool, OSError):
                # OSError: a worker died while this submit was starting another, whose start
                # then found the pool's queue closed ("handle is closed")
                raise _failed() from None
            in_flight += len(job)
            if in_flight >= AHEAD * workers and len(pending) > workers:
                pages = await _result(pending.popleft())
                in_flight -= len(pages)
                for page in pages:
                    yield page
        while pending:
            for page in await _result(pending.popleft()):
                yield page
        finished = True
    finally:
        for future in pending:
            future.cancel()
        processes = _processes(pool)
        if not finished:
            # Stopped early (a worker died, an error, the consumer gave up): stop every worker
            # first. Python 3.11's pool, when one dies, stops the others it knew of and then
            # waits for all of them, one started meanwhile included, and shutdown waits for it.
            _terminate(processes)
        pool.shutdown(wait=True, cancel_futures=True)
        _terminate(processes)  # after a worker died, Python may leave one of the others


def _terminate(processes: list[BaseProcess]) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(5)


def _processes(pool: ProcessPoolExecutor) -> list[BaseProcess]:
    """The pool's worker processes (its private table: Python 3.11's pool can fail to stop
    the others when one dies, ``RuntimeError: dictionary changed size during iteration`` in its
    management thread, and leave them waiting for work that never comes)."""
    for _ in range(100):
        try:
            table: dict[int, BaseProcess] = getattr(pool, "_processes", None) or {}
            return list(table.values())
        except RuntimeError:  # changed while copied: again
            continue
    return []


async def _chained(head: list[Work], rest: AsyncIterator[Work]) -> AsyncIterator[Work]:
    for work in head:
        yield work
    async for work in rest:
        yield work


async def _result(future: asyncio.Future[list[PreparedPage]]) -> list[PreparedPage]:
    try:
        return await future
    except BrokenProcessPool:
        raise _failed() from None


def _failed() -> WorkerFailed:
    return WorkerFailed(
        "a worker process of the export died (out of memory?): nothing was written; "
        "export again with fewer --workers (0: none)"
    )
