"""The archive tier: the calls of a time range written to one Parquet file, before the range
leaves the database.

What training needs long-term is cheap to keep as columnar files on disk or in an object store
(``capture.archive_location``), and the exporter reads them beside the database with the same
filters (``exporter.archive_source``). One file per range (a partition on PostgreSQL, a UTC day
otherwise), named by it: ``calls-2026-12-01.parquet`` for a day, ``calls-2026-12.parquet`` for a
month, ``calls-20261201T000000Z-20261201T060000Z.parquet`` for any other range.

A file holds every column of ``calls`` (JSON columns as their compact JSON text; the parts
stored once in ``content`` put back, ``capture.content.resolve_rows``, so a file stands alone
and ``content_refs`` is not kept) and the call's feedback as a nested list column
(``feedback``: id, created_at, score, label, comment), rows in (created_at, id) order, read
from the database a page of ``PAGE_SIZE`` calls at a time, written in row groups of about
``ROW_GROUP_ROWS`` calls (at most ``ROW_GROUP_BYTES`` of Arrow data), zstd-compressed. The file
is built in a temporary folder, a row group at a time (memory holds one), then put whole
(``Location.put_file``), then recorded in the manifest with its range, counts and sha256.
Archiving a range again replaces its file with the union of what it held and what the database
holds (a call in both: the database's), so a call that arrives late in a range already
archived and dropped is added, and nothing archived is lost.

``archive_before(engine, location, cutoff)`` archives each partition (``capture.partitions``;
a UTC day on SQLite) that ends by ``cutoff`` and leaves the database as it is;
``archive_and_prune`` archives each in the drop's ``before_drop``, so a partition is dropped only
once its file is written and recorded, and a failed archive stops the prune there. The
writer's retention (``capture.retention_days``) archives the same way when ``capture.archive``
is set (``configured_archiver``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Integer,
    String,
    and_,
    delete,
    func,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from capture.archive_location import (
    ArchivedFile,
    ArchiveError,
    Location,
    open_location,
    read_manifest,
    record_file,
    sha256_file,
)
from capture.config import ArchiveSettings
from capture.content import FLAG, resolve_rows
from capture.partitions import (
    BeforeDrop,
    Partition,
    Unit,
    adopt_default_rows,
    drop_partitions_before,
    is_partitioned,
    partitions,
)
from capture.schema import UTCDateTime, calls, feedback

PAGE_SIZE = 1000
ROW_GROUP_ROWS = 4000
ROW_GROUP_BYTES = 64 << 20
COMPRESSION: Final = "zstd"
FEEDBACK_COLUMN = "feedback"
SKIPPED_COLUMNS = frozenset({FLAG})
"""``content_refs``: the parts are put back before writing, so it says nothing in a file."""
DAY = dt.timedelta(days=1)

Row = dict[str, Any]
Range = tuple[dt.datetime, dt.datetime]


def _arrow_type(column: Column[Any]) -> pa.DataType:
    kind = column.type
    if isinstance(kind, UTCDateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(kind, JSON):
        return pa.string()
    if isinstance(kind, Boolean):
        return pa.bool_()
    if isinstance(kind, Integer):
        return pa.int64()
    if isinstance(kind, Float):
        return pa.float64()
    if isinstance(kind, String):
        return pa.string()
    raise TypeError(f"calls.{column.name}: no Parquet type for {kind!r}")


FEEDBACK_TYPE = pa.list_(
    pa.struct(
        [
            ("id", pa.int64()),
            ("created_at", pa.timestamp("us", tz="UTC")),
            ("score", pa.float64()),
            ("label", pa.string()),
            ("comment", pa.string()),
        ]
    )
)
CALL_COLUMNS = tuple(column for column in calls.columns if column.name not in SKIPPED_COLUMNS)
JSON_COLUMNS = frozenset(column.name for column in CALL_COLUMNS if isinstance(column.type, JSON))
SCHEMA = pa.schema(
    [
        *(
            pa.field(column.name, _arrow_type(column), nullable=column.nullable is not False)
            for column in CALL_COLUMNS
        ),
        pa.field(FEEDBACK_COLUMN, FEEDBACK_TYPE),
    ]
)
"""Every column of ``calls`` but ``content_refs``, then the call's feedback."""
STATISTICS = [
    name
    for name in SCHEMA.names
    if name not in (*JSON_COLUMNS, FEEDBACK_COLUMN, "tags", "error", "user_key")
]
"""Columns with min/max statistics in each row group: what a reader prunes row groups by. The
JSON columns' would be whole request texts, 40 MB of metadata in every process that opens a
day of 1,000 row groups."""


def file_name(start: dt.datetime, end: dt.datetime) -> str:
    """The file of the range [start, end), named by it."""
    start, end = start.astimezone(dt.UTC), end.astimezone(dt.UTC)
    midnight = start == start.replace(hour=0, minute=0, second=0, microsecond=0)
    if midnight and end == start + DAY:
        return f"calls-{start:%Y-%m-%d}.parquet"
    if midnight and start.day == 1 and end == _next_month(start):
        return f"calls-{start:%Y-%m}.parquet"
    return f"calls-{start:%Y%m%dT%H%M%SZ}-{end:%Y%m%dT%H%M%SZ}.parquet"


def _next_month(start: dt.datetime) -> dt.datetime:
    return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def json_text(value: Any) -> str | None:
    """A JSON column's value as compact JSON text (None stays NULL)."""
    if value is None:
        return None
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # an integer over 64 bits, nesting orjson refuses
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _in_range(start: dt.datetime, end: dt.datetime) -> Any:
    return and_(calls.c.created_at >= start, calls.c.created_at < end)


async def _page(
    connection: AsyncConnection,
    start: dt.datetime,
    end: dt.datetime,
    cursor: tuple[dt.datetime, str] | None,
    size: int,
) -> list[Row]:
    query = select(*calls.columns).where(_in_range(start, end))
    if cursor is not None:
        at, call_id = cursor
        query = query.where(
            calls.c.created_at >= at, or_(calls.c.created_at > at, calls.c.id > call_id)
        )
    query = query.order_by(calls.c.created_at, calls.c.id).limit(size)
    rows = [dict(row) for row in (await connection.execute(query)).mappings()]
    await resolve_rows(connection, rows)
    for row in rows:
        row.pop(FLAG, None)
    return rows


async def _feedback_of(connection: AsyncConnection, ids: Sequence[str]) -> dict[str, list[Row]]:
    found: dict[str, list[Row]] = {}
    if not ids:
        return found
    query = (
        select(
            feedback.c.request_id,
            feedback.c.id,
            feedback.c.created_at,
            feedback.c.score,
            feedback.c.label,
            feedback.c.comment,
        )
        .where(feedback.c.request_id.in_(list(ids)))
        .order_by(feedback.c.id)
    )
    for row in (await connection.execute(query)).mappings():
        entry = dict(row)
        found.setdefault(entry.pop("request_id"), []).append(entry)
    return found


def _records(rows: list[Row], scores: dict[str, list[Row]]) -> list[Row]:
    """Database rows as file records: JSON columns as text, the feedback nested (in place)."""
    for row in rows:
        for name in JSON_COLUMNS:
            row[name] = json_text(row.get(name))
        row[FEEDBACK_COLUMN] = scores.get(row["id"], [])
    return rows


class _RowGroups:
    """Pages of records written as row groups of at least ``ROW_GROUP_ROWS`` calls (or
    ``ROW_GROUP_BYTES`` of Arrow data, whichever comes first): each page becomes Arrow data as
    it comes, and the group is written when it is full. A reader parses the file's metadata,
    about 35 KB per row group: a day of 1,000,000 calls in groups of 1,000 was 35 MB of every
    process that opened it."""

    def __init__(self, writer: pq.ParquetWriter) -> None:
        self.writer = writer
        self.tables: list[pa.Table] = []
        self.rows = 0
        self.nbytes = 0

    def add(self, records: list[Row]) -> None:
        table = pa.Table.from_pylist(records, schema=SCHEMA)
        self.tables.append(table)
        self.rows += table.num_rows
        self.nbytes += table.nbytes
        if self.rows >= ROW_GROUP_ROWS or self.nbytes >= ROW_GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            group = pa.concat_tables(self.tables)
            self.writer.write_table(group, row_group_size=group.num_rows)
        self.tables, self.rows, self.nbytes = [], 0, 0


async def count_range(engine: AsyncEngine, start: dt.datetime, end: dt.datetime) -> int:
    async with engine.connect() as connection:
        query = select(func.count()).select_from(calls).where(_in_range(start, end))
        return int(await connection.scalar(query) or 0)


async def _database_records(
    engine: AsyncEngine, start: dt.datetime, end: dt.datetime, page_size: int
) -> AsyncIterator[list[Row]]:
    """The calls of [start, end) as file records (JSON as text, feedback nested), a page at a
    time, in (created_at, id) order."""
    cursor: tuple[dt.datetime, str] | None = None
    while True:
        async with engine.connect() as connection:
            rows = await _page(connection, start, end, cursor, page_size)
            scores = await _feedback_of(connection, [row["id"] for row in rows])
        if not rows:
            return
        cursor = (rows[-1]["created_at"], rows[-1]["id"])
        yield await asyncio.to_thread(_records, rows, scores)
        if len(rows) < page_size:
            return


def _file_records(path: Path, page_size: int) -> Iterator[list[Row]]:
    """The records of an archived file, a batch at a time, in its (created_at, id) order."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=page_size):
        yield batch.to_pylist()


async def write_range(
    engine: AsyncEngine,
    start: dt.datetime,
    end: dt.datetime,
    path: Path,
    page_size: int,
    earlier: Path | None = None,
) -> tuple[int, int, int]:
    """The calls of [start, end) into the Parquet file ``path``, merged with those of the file
    ``earlier`` archived before (a call in both: the database's); (calls, feedback rows, calls
    from the database)."""
    written = scored = from_database = 0
    database = _database_records(engine, start, end, page_size)
    archived: Iterator[list[Row]] = (
        iter(()) if earlier is None else _file_records(earlier, page_size)
    )
    sides: list[list[Row]] = [[], []]
    at = [0, 0]
    live = [True, earlier is not None]

    async def head(side: int) -> Row | None:
        while live[side] and at[side] >= len(sides[side]):
            if side == 0:
                batch = await anext(database, None)
            else:
                batch = await asyncio.to_thread(next, archived, None)
            live[side] = batch is not None
            sides[side], at[side] = batch or [], 0
        return sides[side][at[side]] if live[side] else None

    page: list[Row] = []
    with pq.ParquetWriter(
        path, SCHEMA, compression=COMPRESSION, write_statistics=STATISTICS
    ) as writer:
        groups = _RowGroups(writer)
        while True:
            ours, old = await head(0), await head(1)
            if ours is None and old is None:
                break
            if ours is not None and (old is None or _key(ours) <= _key(old)):
                at[0] += 1
                from_database += 1
                if old is not None and old["id"] == ours["id"]:
                    at[1] += 1
                chosen = ours
            else:
                assert old is not None
                at[1] += 1
                chosen = old
            page.append(chosen)
            scored += len(chosen[FEEDBACK_COLUMN] or ())
            if len(page) == page_size:
                # Compressing off the event loop: the gateway's maintenance runs here.
                await asyncio.to_thread(groups.add, page)
                written += len(page)
                page = []
        if page:
            await asyncio.to_thread(groups.add, page)
            written += len(page)
        await asyncio.to_thread(groups.flush)
    return written, scored, from_database


def _key(record: Row) -> tuple[dt.datetime, str]:
    return (record["created_at"].astimezone(dt.UTC), record["id"])


async def _archive_range(
    engine: AsyncEngine,
    location: Location,
    start: dt.datetime,
    end: dt.datetime,
    page_size: int,
    now: dt.datetime | None,
) -> tuple[ArchivedFile, int]:
    if start >= end:
        raise ArchiveError(f"empty range: {start.isoformat()} is not before {end.isoformat()}")
    name = file_name(start, end)
    manifest = await asyncio.to_thread(read_manifest, location)
    earlier = next((entry for entry in manifest if entry.name == name), None)
    with tempfile.TemporaryDirectory(prefix="gateway-archive-") as folder:
        path = Path(folder) / name
        before: Path | None = None
        if earlier is not None:
            before = Path(folder) / f"earlier-{name}"
            await asyncio.to_thread(location.download, name, before)
        rows, scored, from_database = await write_range(engine, start, end, path, page_size, before)
        entry = ArchivedFile(
            name=name,
            start=start.astimezone(dt.UTC),
            end=end.astimezone(dt.UTC),
            rows=rows,
            feedback=scored,
            bytes=path.stat().st_size,
            sha256=await asyncio.to_thread(sha256_file, path),
            archived_at=now or dt.datetime.now(dt.UTC),
        )
        await asyncio.to_thread(location.put_file, name, path)
    await asyncio.to_thread(record_file, location, entry)
    return entry, from_database


async def archive_range(
    engine: AsyncEngine,
    location: Location,
    start: dt.datetime,
    end: dt.datetime,
    *,
    page_size: int = PAGE_SIZE,
    now: dt.datetime | None = None,
) -> ArchivedFile:
    """Archive the calls created in [start, end): the file written whole, then recorded in the
    manifest; ArchiveError when it cannot be, and nothing in the database is changed. A range
    archived before keeps the calls its file holds (those dropped since included), with the
    database's added or, for a call in both, in their place."""
    entry, _ = await _archive_range(engine, location, start, end, page_size, now)
    return entry


async def delete_archived(engine: AsyncEngine, entry: ArchivedFile, archived: int) -> int:
    """Delete the calls (and feedback) of an archived range, ``archived`` of which the file took
    from the database, in one transaction that is rolled back, with ArchiveError, unless it
    deletes exactly that many (a call written into the range since is never lost)."""
    in_range = _in_range(entry.start, entry.end)
    async with engine.begin() as connection:
        ids = select(calls.c.id).where(in_range)
        await connection.execute(delete(feedback).where(feedback.c.request_id.in_(ids)))
        deleted = int((await connection.execute(delete(calls).where(in_range))).rowcount)
        if deleted != archived:  # raising rolls the transaction back
            raise ArchiveError(
                f"{entry.name} took {archived} calls from the database but its range now has "
                f"{deleted}: archive it again before deleting; nothing was deleted"
            )
    return deleted


def day_floor(moment: dt.datetime) -> dt.datetime:
    moment = moment.astimezone(dt.UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


async def _days_with_calls(engine: AsyncEngine, cutoff: dt.datetime) -> list[Range]:
    """The UTC days wholly before ``cutoff`` that hold calls (a database without partitions)."""
    last = day_floor(cutoff)
    async with engine.connect() as connection:
        first = await connection.scalar(
            select(func.min(calls.c.created_at)).where(calls.c.created_at < last)
        )
    days: list[Range] = []
    day = day_floor(first) if first is not None else last
    while day < last:
        if await count_range(engine, day, day + DAY):
            days.append((day, day + DAY))
        day += DAY
    return days


async def ranges_before(
    engine: AsyncEngine, cutoff: dt.datetime, unit: Unit = "day"
) -> list[Range]:
    """The ranges to archive before ``cutoff``, oldest first: the partitions of ``calls`` that
    end by then (``capture.partitions``; SQLite: the UTC days holding calls; rows in the
    DEFAULT partition get theirs first, in ``unit`` periods, as the prune does), or the UTC days
    holding calls on a PostgreSQL database without partitions."""
    async with engine.connect() as connection:
        partitioned = await is_partitioned(connection)
    if partitioned:
        await adopt_default_rows(engine, unit)
    if partitioned or engine.dialect.name == "sqlite":
        found = await partitions(engine)
        return [(p.start, p.end) for p in found if p.table == "calls" and p.end <= cutoff]
    return await _days_with_calls(engine, cutoff)


async def archive_before(
    engine: AsyncEngine,
    location: Location,
    cutoff: dt.datetime,
    *,
    unit: Unit = "day",
    page_size: int = PAGE_SIZE,
) -> list[ArchivedFile]:
    """Archive every range (partition) that ends by ``cutoff`` and holds calls; the database
    is not changed. Ranges without calls get no file."""
    done = []
    for start, end in await ranges_before(engine, cutoff, unit):
        if await count_range(engine, start, end):
            done.append(await archive_range(engine, location, start, end, page_size=page_size))
    return done


def partition_archiver(
    engine: AsyncEngine, location: Location, page_size: int = PAGE_SIZE
) -> BeforeDrop:
    """A ``before_drop`` for ``capture.partitions.drop_partitions_before`` (and the retention's
    ``Maintenance``): each partition holding calls is archived before it goes; an ArchiveError
    keeps it, and the later ones, in the database."""

    async def before_drop(partition: Partition) -> None:
        if await count_range(engine, partition.start, partition.end):
            await archive_range(
                engine, location, partition.start, partition.end, page_size=page_size
            )

    return before_drop


def configured_archiver(engine: AsyncEngine, settings: ArchiveSettings) -> BeforeDrop:
    """``partition_archiver`` for ``capture.archive``, its location opened at the first
    partition (the writer's retention builds it at start; a store unreachable then is only an
    error of the round that needs it, which keeps its partitions and is retried)."""
    opened: list[BeforeDrop] = []

    async def before_drop(partition: Partition) -> None:
        if not opened:
            location = open_location(settings.url, settings.s3_options())
            opened.append(partition_archiver(engine, location))
        await opened[0](partition)

    return before_drop


@dataclass(frozen=True)
class Pruned:
    archived: tuple[ArchivedFile, ...]
    calls: int
    """Calls removed from the database."""


async def archive_and_prune(
    engine: AsyncEngine,
    location: Location,
    cutoff: dt.datetime,
    *,
    unit: Unit = "day",
    page_size: int = PAGE_SIZE,
) -> Pruned:
    """Archive, then drop, every partition that ends by ``cutoff``: the archive is written in
    the drop's ``before_drop`` (``capture.partitions.drop_partitions_before``), so a partition
    whose archive failed stays, and so do the later ones (the ArchiveError is raised). On a
    PostgreSQL database without partitions: each UTC day archived, then deleted
    (``delete_archived``)."""
    archived: list[ArchivedFile] = []

    async def before_drop(partition: Partition) -> None:
        if await count_range(engine, partition.start, partition.end):
            entry = await archive_range(
                engine, location, partition.start, partition.end, page_size=page_size
            )
            archived.append(entry)  # like partition_archiver, keeping what it wrote

    async with engine.connect() as connection:
        partitioned = await is_partitioned(connection)
    if partitioned or engine.dialect.name == "sqlite":
        result = await drop_partitions_before(engine, cutoff, before_drop, unit=unit)
        return Pruned(tuple(archived), result.calls)
    removed = 0
    for start, end in await _days_with_calls(engine, cutoff):
        entry, taken = await _archive_range(engine, location, start, end, page_size, None)
        archived.append(entry)
        removed += await delete_archived(engine, entry, taken)
    return Pruned(tuple(archived), removed)
