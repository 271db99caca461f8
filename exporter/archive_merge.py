"""The database's calls and the archive's merged in key order, a call in both once.

``merge_pages`` merges two sources' pages of rows (``exporter.selection.stream_pages``);
``merge_rows`` two lists of rows (a worker's page: its database span and its archived spans);
``merged_work`` the two sources' listed keys into the pages the export's workers read
(``exporter.selection.Work``). Where a call is in both (archived, not yet dropped), the
database's is kept. Nothing here reads a file: ``exporter.archive_source`` does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

from exporter.archive_source import Key, Listed, Row
from exporter.selection import ArchivedSpan, Span, Work

_Item = TypeVar("_Item")


class _Heads(Generic[_Item]):
    """Two sources of batches, read an item at a time: each side's next item (None once the
    side has ended), taken when the merge uses it."""

    def __init__(self, *sources: AsyncIterator[list[_Item]]) -> None:
        self.sources = sources
        self._buffers: list[list[_Item]] = [[] for _ in sources]
        self._positions = [0 for _ in sources]
        self._live = [True for _ in sources]

    async def head(self, side: int) -> _Item | None:
        buffers, positions, live = self._buffers, self._positions, self._live
        while live[side] and positions[side] >= len(buffers[side]):
            try:
                buffers[side] = await anext(self.sources[side])
            except StopAsyncIteration:
                live[side] = False
                buffers[side] = []
            positions[side] = 0
        return buffers[side][positions[side]] if live[side] else None

    def take(self, side: int) -> None:
        self._positions[side] += 1


async def merge_pages(
    database: AsyncIterator[list[Row]],
    archive: AsyncIterator[list[Row]],
    page_size: int,
    limit: int | None = None,
) -> AsyncIterator[list[Row]]:
    """The two sources' rows in (created_at, id) order, a row in both once (the database's),
    in pages of ``page_size``, at most ``limit`` rows in all."""
    heads = _Heads(database, archive)

    def key(row: Row) -> Key:
        return (row["created_at"], row["id"])

    page: list[Row] = []
    emitted = 0
    while limit is None or emitted < limit:
        first, second = await heads.head(0), await heads.head(1)
        if first is None and second is None:
            break
        if second is None or (first is not None and key(first) <= key(second)):
            assert first is not None
            chosen = first
            heads.take(0)
            if second is not None and key(second) == key(first):
                heads.take(1)
        else:
            chosen = second
            heads.take(1)
        page.append(chosen)
        emitted += 1
        if len(page) == page_size:
            yield page
            page = []
    if page:
        yield page


def merge_rows(database: list[Row], archived: list[Row]) -> list[Row]:
    """Two lists of rows, each in (created_at, id) order, merged in that order; a call in
    both once (the database's)."""
    merged: list[Row] = []
    at = 0
    for row in database:
        key = (row["created_at"], row["id"])
        while at < len(archived) and (archived[at]["created_at"], archived[at]["id"]) < key:
            merged.append(archived[at])
            at += 1
        if at < len(archived) and (archived[at]["created_at"], archived[at]["id"]) == key:
            at += 1
        merged.append(row)
    merged.extend(archived[at:])
    return merged


async def merged_work(
    database: AsyncIterator[list[Key]],
    archive: AsyncIterator[list[Listed]],
    page_size: int,
    limit: int | None = None,
) -> AsyncIterator[Work]:
    """Pages of ``page_size`` calls from the database's keys and the archive's (each with its
    file), in (created_at, id) order, a call in both once (the database's), at most ``limit``
    in all: each the span of its database keys and, per file, the span of its archived keys."""
    heads: _Heads[Any] = _Heads(database, archive)

    start: Key | None = None
    last: Key | None = None
    counted = 0
    archived: list[ArchivedSpan] = []
    previous: Listed | None = None
    """The last archived key listed, with its file and row group."""
    emitted = 0
    limited = limit is not None

    def archive_up_to(item: Listed) -> None:
        nonlocal previous
        key, path, group = item
        if archived and archived[-1].path == path:
            last = archived[-1]
            first = last.groups[0] if last.groups is not None else group
            archived[-1] = ArchivedSpan(path, last.start, key, (first, group))
        else:
            after = previous[0] if previous is not None and previous[1] == path else None
            archived.append(ArchivedSpan(path, after, key, (group, group)))
        previous = item

    def page() -> Work:
        span = Span(start, last, counted) if last is not None and counted else None
        return Work(span, archived, limited)

    in_page = 0
    try:
        while limit is None or emitted < limit:
            key, item = await heads.head(0), await heads.head(1)
            if key is None and item is None:
                break
            if item is None or (key is not None and key <= item[0]):
                heads.take(0)
                if item is not None and key == item[0]:
                    heads.take(1)  # in both: the reader sees both in this page, keeps one
                    archive_up_to(item)
                last = key
                counted += 1
            else:
                heads.take(1)
                archive_up_to(item)
            emitted += 1
            in_page += 1
            if in_page == page_size:
                yield page()
                if last is not None:
                    start = last
                last, counted, archived, in_page = None, 0, [], 0
        if in_page:
            yield page()
    finally:  # a limit reached: the listings stop now (the archive's may be a process)
        for source in heads.sources:
            close = getattr(source, "aclose", None)
            if close is not None:
                await close()
