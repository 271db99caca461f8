"""Reading the selected calls in pages, so memory stays flat whatever the store holds.

Keyset pagination on ``(created_at, id)``: each page is its own short query, ordered by the
key and starting after the last row of the page before. No OFFSET (which rereads everything
before the page), no server-side cursor held open for the whole export (which would pin a
connection and, on SQLite, a read snapshot), and a row written while the export runs is
either in a later page or after the end, never read twice. The next page is requested before
the current one is handed out, so the database works while the caller does.

With an archive (``exporter.archive_source``) the calls archived out of the database are read
too, with the same filters, and merged in key order into pages of the same size: a call reads
the same whether the database or the archive holds it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from capture.content import resolve_rows
from capture.schema import calls
from exporter.filters import Filters, after, conditions, feedback_score, up_to

if TYPE_CHECKING:
    from exporter.archive_source import ArchiveSource

Row = dict[str, Any]
Key = tuple[dt.datetime, str]
DEFAULT_PAGE_SIZE = 1000
KEY_CHUNK = 20_000
"""Keys read per query when the export lists the selected calls' keys (``keys``)."""

COLUMNS = (
    calls.c.id,
    calls.c.created_at,
    calls.c.endpoint,
    calls.c.route,
    calls.c.variant,
    calls.c.upstream_model,
    calls.c.dialect,
    calls.c.upstream_api,
    calls.c.request,
    calls.c.response,
    calls.c.normalized,
    calls.c.finish_reason,
    calls.c.prompt_tokens,
    calls.c.completion_tokens,
    calls.c.cost_usd,
    calls.c.total_ms,
    calls.c.shadow_of,
    calls.c.content_refs,
)
"""``content_refs`` is read only to put the request's stored-once parts back
(``capture.content.resolve_rows``, one query per page); the rows handed out do not have it."""
PREPARED = (
    "id",
    "created_at",
    "endpoint",
    "dialect",
    "upstream_api",
    "request",
    "response",
    "normalized",
)
"""What an export's pages are read with (``read_work``), besides ``feedback_score``: what
``exporter.examples`` makes an example of, and the key (merged with the archive's by it). The
other columns cost decoding and a dict entry a call each, for nothing."""
PREPARED_COLUMNS = (*(calls.c[name] for name in PREPARED), calls.c.content_refs)


def page_query(filters: Filters, cursor: tuple[dt.datetime, str] | None, size: int) -> Select[Any]:
    query = select(*COLUMNS, feedback_score().label("feedback_score")).where(conditions(filters))
    if cursor is not None:
        query = query.where(after(*cursor))
    return query.order_by(calls.c.created_at, calls.c.id).limit(size)


@dataclass(frozen=True)
class Span:
    """The selected calls after ``start`` (None: from the first) up to ``end`` included, in
    keyset order: ``count`` of them when their keys were listed."""

    start: Key | None
    end: Key
    count: int


@dataclass(frozen=True)
class ArchivedSpan:
    """Archived calls of one file (a local path: an S3 file is downloaded first) after
    ``start`` (None: from the file's first) up to ``end`` included, in keyset order."""

    path: str
    start: Key | None
    end: Key
    groups: tuple[int, int] | None = None
    """The file's row groups that hold the span, first and last, when the listing knew them
    (else the reader finds them by the groups' time ranges)."""


@dataclass(frozen=True)
class Work:
    """One page to read: the database's calls in ``span`` and the archive's in ``archived``,
    merged in keyset order. ``limited``: read no more of the span than it counted (an export
    with a limit); else a call written into the span since it was listed is read too."""

    span: Span | None
    archived: list[ArchivedSpan] = field(default_factory=list)
    limited: bool = False


def span_query(filters: Filters, span: Span, limit: int | None = None) -> Select[Any]:
    """The calls of ``span`` with the columns of ``PREPARED``."""
    query = select(*PREPARED_COLUMNS, feedback_score().label("feedback_score")).where(
        conditions(filters), up_to(*span.end)
    )
    if span.start is not None:
        query = query.where(after(*span.start))
    query = query.order_by(calls.c.created_at, calls.c.id)
    return query.limit(limit) if limit is not None else query


async def keys(
    engine: AsyncEngine, filters: Filters, limit: int | None = None, chunk: int = KEY_CHUNK
) -> AsyncIterator[list[Key]]:
    """The selected calls' keys, oldest first, ``chunk`` at a time, at most ``limit``."""
    cursor: Key | None = None
    remaining = limit
    while remaining is None or remaining > 0:
        size = chunk if remaining is None else min(chunk, remaining)
        query = select(calls.c.created_at, calls.c.id).where(conditions(filters))
        if cursor is not None:
            query = query.where(after(*cursor))
        query = query.order_by(calls.c.created_at, calls.c.id).limit(size)
        async with engine.connect() as connection:
            found: list[Key] = [(row[0], row[1]) for row in await connection.execute(query)]
        if found:
            yield found
        if len(found) < size:
            return
        cursor = found[-1]
        if remaining is not None:
            remaining -= len(found)


async def database_work(
    engine: AsyncEngine, filters: Filters, page_size: int, limit: int | None = None
) -> AsyncIterator[Work]:
    """The database's selected calls as pages of ``page_size`` keys."""
    start: Key | None = None
    page: list[Key] = []
    async for chunk in keys(engine, filters, limit):
        for key in chunk:
            page.append(key)
            if len(page) == page_size:
                yield Work(Span(start, key, len(page)), limited=limit is not None)
                start, page = key, []
    if page:
        yield Work(Span(start, page[-1], len(page)), limited=limit is not None)


async def listed_work(
    engine: AsyncEngine,
    filters: Filters,
    page_size: int = DEFAULT_PAGE_SIZE,
    limit: int | None = None,
    archive: ArchiveSource | None = None,
    folder: Path | None = None,
) -> AsyncIterator[Work]:
    """The selected calls as pages to read, oldest first; those in ``archive`` too when given
    (an S3 archive's files downloaded into ``folder``, which must outlive the reading)."""
    if archive is None:
        pages = database_work(engine, filters, page_size, limit)
    else:
        from exporter.archive_merge import merged_work

        if folder is None:
            raise ValueError("an archive is read through a folder for its downloads")
        database = keys(engine, filters, limit)
        pages = merged_work(database, archive.keys(filters, folder), page_size, limit)
    async for page in pages:
        yield page


async def read_work(engine: AsyncEngine, filters: Filters, work: Work) -> list[Row]:
    """The rows of a page, with the columns of ``PREPARED`` and ``feedback_score``: its span's
    from the database, its archived ones decoded, in keyset order, a call in both once (the
    database's)."""
    rows: list[Row] = []
    if work.span is not None:
        size = work.span.count if work.limited else None
        rows = await _fetch(engine, span_query(filters, work.span, size))
    if not work.archived:
        return rows
    from exporter.archive_merge import merge_rows
    from exporter.archive_read import read_span

    archived = [row for span in work.archived for row in read_span(span, filters)]
    return merge_rows(rows, archived)


async def _fetch(engine: AsyncEngine, query: Select[Any]) -> list[Row]:
    async with engine.connect() as connection:
        result = await connection.execute(query)
        names = list(result.keys())
        rows = [dict(zip(names, row, strict=True)) for row in result]
        await resolve_rows(connection, rows)
        return rows


async def stream_pages(
    engine: AsyncEngine,
    filters: Filters,
    page_size: int = DEFAULT_PAGE_SIZE,
    limit: int | None = None,
    archive: ArchiveSource | None = None,
) -> AsyncIterator[list[Row]]:
    """The selected calls, oldest first, ``page_size`` at a time, at most ``limit`` in all;
    those in ``archive`` too when given."""
    if archive is None:
        pages = _database_pages(engine, filters, page_size, limit)
    else:
        from exporter.archive_merge import merge_pages

        database = _database_pages(engine, filters, page_size, limit)
        pages = merge_pages(database, archive.rows(filters), page_size, limit)
    async for page in pages:
        yield page


async def _database_pages(
    engine: AsyncEngine, filters: Filters, page_size: int, limit: int | None
) -> AsyncIterator[list[Row]]:
    remaining = limit

    def size() -> int:
        return page_size if remaining is None else min(page_size, remaining)

    requested = size()
    if requested <= 0:
        return
    pending = asyncio.ensure_future(_fetch(engine, page_query(filters, None, requested)))
    try:
        while True:
            page = await pending
            if remaining is not None:
                remaining -= len(page)
            more = len(page) == requested and size() > 0
            if more:
                cursor = (page[-1]["created_at"], page[-1]["id"])
                requested = size()
                query = page_query(filters, cursor, requested)
                pending = asyncio.ensure_future(_fetch(engine, query))
                await asyncio.sleep(0)  # let the next query go out before the caller computes
            if page:
                yield page
            if not more:
                return
    finally:
        if not pending.done():
            pending.cancel()


async def count(engine: AsyncEngine, filters: Filters) -> int:
    query = select(func.count()).select_from(calls).where(conditions(filters))
    async with engine.connect() as connection:
        return int(await connection.scalar(query) or 0)


async def fetch_by_ids(
    engine: AsyncEngine, ids: Sequence[str], archive: ArchiveSource | None = None
) -> dict[str, Row]:
    """Calls by id (any filter aside), for pairs found in an earlier pass; those not in the
    database are looked for in ``archive`` when given."""
    found: dict[str, Row] = {}
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        query = select(*COLUMNS, feedback_score().label("feedback_score")).where(
            calls.c.id.in_(chunk)
        )
        for row in await _fetch(engine, query):
            found[row["id"]] = row
    missing = [call_id for call_id in ids if call_id not in found]
    if archive is not None and missing:
        found.update(await archive.by_ids(missing))
    return found
