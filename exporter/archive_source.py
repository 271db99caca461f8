"""The archive as a second source of calls, read with the same filters as the database.

``ArchiveSource.rows(filters)`` reads the archive's Parquet files (``capture.archive``) in
range order, only those whose range meets the filters' time window, with a pyarrow dataset
scan (``exporter.archive_read``): the filters on plain columns (endpoint, status, route,
variant, model, time, finish reason, shadow, token bounds) are pushed down, so row groups whose
statistics rule them out are skipped (rows are in time order, so a time window skips most of a
file), and only the columns the exporter reads are decoded. Tags (JSON text) and the feedback
mean (a nested column) are checked on the rows that pass. Record batches stream: memory holds
one batch. An S3 file is downloaded to a temporary file first, one at a time.

A row read back is the row the database gives. ``exporter.archive_merge`` merges the database's
pages and the archive's by (created_at, id), a call present in both (archived, not yet dropped)
once, into pages of the same size: the export reads the same rows in the same pages whichever
side holds them.

The export reads it in two steps instead, so that its workers do the reading:
``ArchiveSource.keys`` lists the selected calls' keys (only the filtered columns decoded; an S3
file downloaded once, kept for the export), ``archive_merge.merged_work`` cuts the keys of both
sides into pages (a page names its span of each file and its row groups), and a worker's
``archive_read.read_span`` reads a span. A listing of ``LIST_APART_CALLS`` calls or more is made
by a process of its own (``exporter.archive_listing``): the export's process then never loads
pyarrow (~60 MB of each process that does).

This module imports no pyarrow: ``exporter.archive_read`` does, in the processes that read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from capture.archive_location import (
    ArchivedFile,
    LocalLocation,
    S3Location,
    S3Options,
    open_location,
    read_manifest,
)
from exporter.filters import Filters

if TYPE_CHECKING:
    import pyarrow.compute as pc

Row = dict[str, Any]
Key = tuple[dt.datetime, str]
Listed = tuple[Key, str, int]
"""An archived call's key, the local file that holds it and the number of its row group."""
_Batch = TypeVar("_Batch")

LIST_APART_CALLS = 100_000
"""Archived calls in the selected files from which their keys are listed by a process of its
own (below, a thread of the export's process lists them: no process to start)."""

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def listed(path: str, group: int, moments: list[int], ids: list[str]) -> list[Listed]:
    """A row group's listed calls (``archive_read.file_keys``) as the export's keys."""
    return [
        ((_EPOCH + moment * _MICROSECOND, call_id), path, group)
        for moment, call_id in zip(moments, ids, strict=True)
    ]


def _meets(entry: ArchivedFile, filters: Filters) -> bool:
    if filters.since is not None and entry.end <= filters.since:
        return False
    return filters.until is None or entry.start < filters.until


@dataclass
class ArchiveSource:
    """An archive (``file:///path`` or ``s3://bucket/prefix``) read as a source of calls."""

    location: LocalLocation | S3Location
    batch_size: int = 1000

    @property
    def url(self) -> str:
        return self.location.url

    def files(self, filters: Filters | None = None) -> list[ArchivedFile]:
        entries = read_manifest(self.location)
        return [e for e in entries if e.rows and (filters is None or _meets(e, filters))]

    def _label(self, entry: ArchivedFile) -> str:
        return f"{self.url}/{entry.name}"

    def _records(
        self, entry: ArchivedFile, where: pc.Expression | None, folder: Path
    ) -> Iterator[list[Row]]:
        from exporter.archive_read import records

        if isinstance(self.location, LocalLocation):
            path = self.location.local_path(entry.name)
        else:
            path = folder / entry.name
            self.location.download(entry.name, path)
        try:
            yield from records(path, self._label(entry), where, self.batch_size)
        finally:
            if not isinstance(self.location, LocalLocation):
                path.unlink(missing_ok=True)

    def _batches(
        self, filters: Filters | None, where: pc.Expression | None
    ) -> Generator[list[Row], None, None]:
        from exporter.archive_read import to_row

        with tempfile.TemporaryDirectory(prefix="gateway-archive-read-") as folder:
            for entry in self.files(filters):
                for records in self._records(entry, where, Path(folder)):
                    rows = [row for r in records if (row := to_row(r, filters)) is not None]
                    if rows:
                        yield rows

    def _local(self, entry: ArchivedFile, folder: Path) -> Path:
        """The file on this machine: an S3 file downloaded into ``folder`` (kept there)."""
        if isinstance(self.location, LocalLocation):
            return self.location.local_path(entry.name)
        path = folder / entry.name
        if not path.exists():
            self.location.download(entry.name, path)
        return path

    def _key_batches(
        self, entries: list[ArchivedFile], filters: Filters, folder: Path
    ) -> Generator[list[Listed], None, None]:
        from exporter.archive_read import file_keys

        for entry in entries:
            path = self._local(entry, folder)
            for group, moments, ids in file_keys(path, self._label(entry), filters):
                yield listed(str(path), group, moments, ids)

    async def keys(self, filters: Filters, folder: Path) -> AsyncIterator[list[Listed]]:
        """The selected archived calls' keys, oldest first, a row group at a time, each with
        the local file that holds it (an S3 file downloaded into ``folder`` and left there: the
        export's workers read the calls from it) and its row group's number."""
        entries = self.files(filters)
        if sum(entry.rows for entry in entries) < LIST_APART_CALLS:
            async for batch in _in_thread(self._key_batches(entries, filters, folder)):
                yield batch
            return
        from exporter.archive_listing import listed_apart

        files = []
        for entry in entries:
            path = await asyncio.to_thread(self._local, entry, folder)
            files.append((str(path), self._label(entry)))
        async for batch in listed_apart(files, filters, folder):
            yield batch

    async def rows(self, filters: Filters) -> AsyncIterator[list[Row]]:
        """The selected archived calls, oldest first, a batch at a time (the reading and
        decoding in a worker thread, so the database's next page is fetched meanwhile)."""
        from exporter.archive_read import pushed_down

        async for batch in _in_thread(self._batches(filters, pushed_down(filters))):
            yield batch

    async def by_ids(self, ids: Sequence[str]) -> dict[str, Row]:
        """Archived calls by id (any filter aside)."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}

        def read() -> dict[str, Row]:
            import pyarrow.compute as pc

            found: dict[str, Row] = {}
            for batch in self._batches(None, pc.field("id").isin(wanted)):
                for row in batch:
                    found[row["id"]] = row
            return found

        return await asyncio.to_thread(read)


async def _in_thread(batches: Generator[_Batch, None, None]) -> AsyncIterator[_Batch]:
    """``batches``, each made in a worker thread: the event loop goes on meanwhile."""
    done: Any = object()
    try:
        while True:
            batch = await asyncio.to_thread(next, batches, done)
            if batch is done:
                return
            yield batch
    finally:
        batches.close()


def open_archive(url: str, s3: S3Options | None = None, batch_size: int = 1000) -> ArchiveSource:
    """ArchiveError (capture.archive_location) for a URL that names no archive."""
    return ArchiveSource(open_location(url, s3), batch_size)
