"""Reading the archive's Parquet files (``capture.archive``): pyarrow, imported only by the
processes that read them.

``records`` scans one file with a pyarrow dataset (the filters on plain columns pushed down, so
row groups whose statistics rule them out are skipped, and only the columns the exporter reads
decoded); ``file_keys`` lists one file's selected calls' keys a row group at a time (only the
filtered columns decoded); ``read_span`` is what an export's worker reads: the row groups of a
page's span, from a file whose metadata it keeps open. A row read back is the row the database
gives (``exporter.selection.COLUMNS`` and ``feedback_score``): JSON columns parsed from the text
they were archived as (keys in the order they were stored in, JSONB's on PostgreSQL), times as
UTC datetimes. ``exporter.archive_source`` says which files to read and in what order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from capture.archive import FEEDBACK_COLUMN, JSON_COLUMNS
from capture.archive_location import ArchiveError
from exporter.filters import Filters
from exporter.selection import PREPARED, ArchivedSpan

if TYPE_CHECKING:
    import pyarrow.dataset as ds

Row = dict[str, Any]
KeyGroup = tuple[int, list[int], list[str]]
"""A row group's selected calls: its number, their times in microseconds and their ids."""
_compute: Any = pc
"""pyarrow's compute functions over expressions (the stubs type them over arrays only)."""

COLUMNS = (
    "id",
    "created_at",
    "endpoint",
    "route",
    "variant",
    "upstream_model",
    "dialect",
    "upstream_api",
    "request",
    "response",
    "normalized",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "total_ms",
    "shadow_of",
)
"""What ``exporter.selection`` reads of a call, in its order; then ``feedback_score``."""
READ_COLUMNS = (*COLUMNS, "tags", FEEDBACK_COLUMN)
_FILTERED = (
    "created_at",
    "id",
    "endpoint",
    "status",
    "route",
    "variant",
    "upstream_model",
    "finish_reason",
    "shadow_of",
    "prompt_tokens",
    "completion_tokens",
)
"""The key and the columns ``pushed_down`` reads: what listing the archive's keys decodes."""


def _dataset(path: Path) -> ds.Dataset:
    """A file as a pyarrow dataset, row groups read as they are scanned: pyarrow's default
    (``pre_buffer``) buffers a file's column chunks ahead as fast as it can read them, 1 GB of
    a 1,000,000-call day. Imported here: pyarrow's dataset and Acero modules are 43 MB of
    every process that loads them, and the export's processes do not (``mask``)."""
    import pyarrow.dataset as ds

    parquet = ds.ParquetFileFormat(
        default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=False)
    )
    return ds.dataset(path, format=parquet)


def pushed_down(filters: Filters) -> pc.Expression:
    """The filters that Parquet statistics and Arrow can evaluate (all but tags and feedback)."""
    field = pc.field
    where = [field("endpoint").isin(list(filters.endpoints)), field("status") == filters.status]
    for name, value in (
        ("route", filters.route),
        ("variant", filters.variant),
        ("upstream_model", filters.upstream_model),
    ):
        if value is not None:
            where.append(field(name) == value)
    if filters.since is not None:
        where.append(field("created_at") >= pa.scalar(filters.since, pa.timestamp("us", "UTC")))
    if filters.until is not None:
        where.append(field("created_at") < pa.scalar(filters.until, pa.timestamp("us", "UTC")))
    if filters.finish_reasons:
        where.append(field("finish_reason").isin(list(filters.finish_reasons)))
    if filters.shadow == "exclude":
        where.append(field("shadow_of").is_null())
    elif filters.shadow == "only":
        where.append(~field("shadow_of").is_null())
    zero = pa.scalar(0, pa.int64())
    total = _compute.add(
        _compute.coalesce(field("prompt_tokens"), zero),
        _compute.coalesce(field("completion_tokens"), zero),
    )
    if filters.min_tokens is not None:
        where.append(total >= filters.min_tokens)
    if filters.max_tokens is not None:
        where.append(total <= filters.max_tokens)
    expression = where[0]
    for condition in where[1:]:
        expression = expression & condition
    return expression


def _tag_text(value: Any) -> str | None:
    """A tag's value as SQL's ``tags ->> key`` gives it."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def to_row(record: Row, filters: Filters | None) -> Row | None:
    """An archived record as the database's row, or None when tags or feedback rule it out."""
    selected, score = _selected(record, filters)
    if not selected:
        return None
    row: Row = {}
    for name in COLUMNS:
        value = record[name]
        if name in JSON_COLUMNS and value is not None:
            value = orjson.loads(value)
        elif name == "created_at":
            value = _utc(value)
        row[name] = value
    row["feedback_score"] = score
    return row


def _selected(record: Row, filters: Filters | None) -> tuple[bool, float | None]:
    """Whether the record's tags and feedback meet ``filters`` (what Parquet cannot check),
    and its feedback mean."""
    if filters is not None and filters.tags and not _tags_match(record["tags"], filters):
        return False, None
    scores = [entry["score"] for entry in record.get(FEEDBACK_COLUMN) or ()]
    score = sum(scores) / len(scores) if scores else None
    minimum = filters.min_feedback if filters is not None else None
    if minimum is not None and (score is None or score < minimum):
        return False, score
    return True, score


def _python_checked(filters: Filters) -> list[str]:
    """The columns ``_selected`` reads for these filters."""
    return [
        *(["tags"] if filters.tags else []),
        *([FEEDBACK_COLUMN] if filters.min_feedback is not None else []),
    ]


def mask(table: pa.Table, filters: Filters) -> Any:
    """``pushed_down(filters)`` evaluated over ``table``'s columns with compute functions (a
    row is kept where it is true): an expression would need Acero, ``_dataset``'s 43 MB."""
    column = table.column
    conditions = [
        _compute.is_in(column("endpoint"), value_set=pa.array(list(filters.endpoints))),
        _compute.equal(column("status"), filters.status),
    ]
    for name, value in (
        ("route", filters.route),
        ("variant", filters.variant),
        ("upstream_model", filters.upstream_model),
    ):
        if value is not None:
            conditions.append(_compute.equal(column(name), value))
    if filters.since is not None or filters.until is not None:
        moments = _micros(column("created_at"))
        if filters.since is not None:
            conditions.append(_compute.greater_equal(moments, micros(filters.since)))
        if filters.until is not None:
            conditions.append(_compute.less(moments, micros(filters.until)))
    if filters.finish_reasons:
        reasons = pa.array(list(filters.finish_reasons), pa.string())
        conditions.append(_compute.is_in(column("finish_reason"), value_set=reasons))
    if filters.shadow == "exclude":
        conditions.append(_compute.is_null(column("shadow_of")))
    elif filters.shadow == "only":
        conditions.append(_compute.is_valid(column("shadow_of")))
    if filters.min_tokens is not None or filters.max_tokens is not None:
        zero = pa.scalar(0, pa.int64())
        total = _compute.add(
            _compute.coalesce(column("prompt_tokens"), zero),
            _compute.coalesce(column("completion_tokens"), zero),
        )
        if filters.min_tokens is not None:
            conditions.append(_compute.greater_equal(total, filters.min_tokens))
        if filters.max_tokens is not None:
            conditions.append(_compute.less_equal(total, filters.max_tokens))
    kept = conditions[0]
    for condition in conditions[1:]:
        kept = _compute.and_kleene(kept, condition)
    return kept


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def micros(moment: dt.datetime) -> int:
    """A time as the archive stores it: microseconds since the epoch, UTC. The export compares
    times as these integers: a time-zone-aware Arrow scalar made from Python (or read back as
    one) makes pyarrow import pandas, 46 MB of every process."""
    return (_utc(moment) - _EPOCH) // _MICROSECOND


def _micros(column: Any) -> Any:
    return column.cast(pa.int64())


def _in_span(table: pa.Table, span: ArchivedSpan) -> Any:
    """Which of ``table``'s rows are in the span: after ``start``, up to ``end`` included."""
    moments, ids = _micros(table.column("created_at")), table.column("id")

    def after(key: tuple[dt.datetime, str]) -> Any:
        moment = micros(key[0])
        return _compute.or_(
            _compute.greater(moments, moment),
            _compute.and_(_compute.equal(moments, moment), _compute.greater(ids, key[1])),
        )

    inside = _compute.invert(after(span.end))
    if span.start is not None:
        inside = _compute.and_(inside, after(span.start))
    return inside


def to_rows(
    table: pa.Table, filters: Filters | None, columns: tuple[str, ...] = COLUMNS
) -> list[Row]:
    """``to_row`` for a whole table, column by column (Arrow's ``to_pylist`` makes each row's
    dict value by value: 30 us a call; this, a third of it); with only ``columns`` (of
    ``COLUMNS``) and ``feedback_score``."""
    if not table.num_rows:
        return []
    names = list(columns)
    values: list[list[Any]] = []
    for name in names:
        column = table.column(name)
        if name == "created_at":  # naive, then UTC: the tzinfo ``_utc`` gives, not zoneinfo's
            naive: list[Any] = column.cast(pa.timestamp("us")).to_pylist()
            values.append([None if v is None else v.replace(tzinfo=dt.UTC) for v in naive])
        elif name in JSON_COLUMNS:
            values.append([None if v is None else orjson.loads(v) for v in column.to_pylist()])
        else:
            values.append(column.to_pylist())
    names.append("feedback_score")
    values.append(_scores(table))
    rows = [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]
    if filters is None:
        return rows
    if filters.tags:
        tags = table.column("tags").to_pylist()
        rows = [row for row, text in zip(rows, tags, strict=True) if _tags_match(text, filters)]
    minimum = filters.min_feedback
    if minimum is not None:
        rows = [row for row in rows if (s := row["feedback_score"]) is not None and s >= minimum]
    return rows


def _tags_match(text: str | None, filters: Filters) -> bool:
    tags = orjson.loads(text) if text else {}
    if not isinstance(tags, dict):
        return False
    return all(_tag_text(tags.get(key)) == wanted for key, wanted in filters.tags.items())


def _scores(table: pa.Table) -> list[float | None]:
    """Each row's feedback mean (None without feedback), from the nested column in bulk."""
    feedback = table.column(FEEDBACK_COLUMN).combine_chunks()
    lengths = _compute.list_value_length(feedback).to_numpy(zero_copy_only=False)
    if not np.nansum(lengths):
        return [None] * len(feedback)
    parents = _compute.list_parent_indices(feedback).to_numpy()
    flat = _compute.list_flatten(feedback)
    score = pc.struct_field(flat, "score").to_numpy(zero_copy_only=False)
    total = np.bincount(parents, weights=score, minlength=len(feedback))
    count = np.bincount(parents, minlength=len(feedback))
    pairs = zip(total.tolist(), count.tolist(), strict=True)
    return [float(t / c) if c else None for t, c in pairs]


def _system_allocator() -> None:
    """Arrow's buffers from the C library's allocator: pyarrow's default (mimalloc) keeps what
    a row group's decompression freed, 20 MB more of each process reading the archive."""
    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())


@dataclass
class _OpenFile:
    """An archived file held open by a worker: its metadata parsed once (40 ms for a day of
    1,000 row groups), and each row group's first and last ``created_at``."""

    parquet: pq.ParquetFile
    columns: list[str]
    bounds: list[tuple[dt.datetime, dt.datetime] | None]

    @classmethod
    def open(cls, path: str) -> _OpenFile:
        _system_allocator()
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        column = names.index("created_at")
        bounds: list[tuple[dt.datetime, dt.datetime] | None] = []
        for number in range(parquet.metadata.num_row_groups):
            statistics = parquet.metadata.row_group(number).column(column).statistics
            if statistics is None or not statistics.has_min_max:
                bounds.append(None)
            else:  # raw: microseconds (``micros``)
                low, high = statistics.min_raw, statistics.max_raw
                assert isinstance(low, int) and isinstance(high, int)
                bounds.append((_EPOCH + low * _MICROSECOND, _EPOCH + high * _MICROSECOND))
        wanted = (*READ_COLUMNS, "status")  # and what ``pushed_down`` reads besides
        return cls(parquet, [name for name in wanted if name in names], bounds)

    def groups(self, span: ArchivedSpan) -> list[int]:
        if span.groups is not None:
            return list(range(span.groups[0], span.groups[1] + 1))
        low = span.start[0] if span.start is not None else None
        high = span.end[0]
        return [
            number
            for number, bound in enumerate(self.bounds)
            if bound is None or ((low is None or bound[1] >= low) and bound[0] <= high)
        ]


_OPEN: dict[str, _OpenFile] = {}
_OPEN_FILES = 4


def close_files() -> None:
    """Let go of the archived files this process holds open (an export's end)."""
    _OPEN.clear()
    _DECODED.clear()


_DECODED: dict[tuple[str, int], pa.Table] = {}
_DECODED_GROUPS = 1
"""Row groups kept decoded: the export gives a worker the consecutive pages of a row group
(``exporter.workers``), each read from the group decoded once; the last group a page read is
the first its next page reads."""


def _row_group(opened: _OpenFile, path: str, number: int) -> pa.Table:
    key = (path, number)
    table = _DECODED.get(key)
    if table is None:
        table = opened.parquet.read_row_group(number, columns=opened.columns, use_threads=False)
        while len(_DECODED) >= _DECODED_GROUPS:
            _DECODED.pop(next(iter(_DECODED)))
        _DECODED[key] = table
    return table


def read_span(span: ArchivedSpan, filters: Filters) -> list[Row]:
    """The archived calls of a page (what a worker reads): the row groups of the span's file
    that hold it (as listed, else those its time range meets), the rows in the span that meet
    ``filters``, in keyset order, with the columns an export's pages are read with
    (``exporter.selection.PREPARED``) and ``feedback_score``."""
    opened = _OPEN.get(span.path)
    try:
        if opened is None:
            if len(_OPEN) >= _OPEN_FILES:
                _OPEN.pop(next(iter(_OPEN)))
            opened = _OPEN[span.path] = _OpenFile.open(span.path)
        groups = opened.groups(span)
        if not groups:
            return []
        table = pa.concat_tables([_row_group(opened, span.path, number) for number in groups])
        table = table.filter(_compute.and_kleene(mask(table, filters), _in_span(table, span)))
        return to_rows(table, filters, PREPARED)
    except (pa.ArrowException, OSError, ValueError, IndexError, KeyError) as exc:
        # ValueError: a JSON text that does not parse; IndexError: a row group the file does
        # not have (replaced since it was listed); KeyError: a column it does not have
        first = (str(exc).strip() or type(exc).__name__).splitlines()[0][:300]
        raise ArchiveError(f"cannot read {span.path}: {first}") from None


def _failed(label: str, exc: BaseException) -> ArchiveError:
    first = (str(exc).strip() or type(exc).__name__).splitlines()[0][:300]
    return ArchiveError(f"cannot read {label}: {first}")


def records(
    path: Path, label: str, where: pc.Expression | None, batch_size: int
) -> Iterator[list[Row]]:
    """The records of one file that ``where`` selects, a batch at a time (``label`` names the
    file in an error)."""
    try:
        dataset = _dataset(path)
        columns = [name for name in READ_COLUMNS if name in dataset.schema.names]
        scanner = dataset.scanner(
            columns=columns, filter=where, batch_size=batch_size, use_threads=False
        )
        for batch in scanner.to_batches():
            if batch.num_rows:
                yield batch.to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise _failed(label, exc) from None


def file_keys(path: Path, label: str, filters: Filters) -> Iterator[KeyGroup]:
    """The keys of one file's calls that ``filters`` select, in the file's order, a row group
    at a time: its number, the calls' times (``micros``) and their ids."""
    checked = _python_checked(filters)
    _system_allocator()
    try:
        parquet = pq.ParquetFile(path)
        present = set(parquet.schema_arrow.names)
        columns = [column for column in (*_FILTERED, *checked) if column in present]
        for group in range(parquet.metadata.num_row_groups):
            table = parquet.read_row_group(group, columns=columns)
            table = table.filter(mask(table, filters))
            if checked:
                chosen = [_selected(record, filters)[0] for record in table.to_pylist()]
                table = table.filter(pa.array(chosen, pa.bool_()))
            if table.num_rows:
                moments: list[int] = _micros(table.column("created_at")).to_pylist()
                ids: list[str] = table.column("id").to_pylist()  # type: ignore[assignment]
                yield group, moments, ids
    except (pa.ArrowException, OSError) as exc:
        raise _failed(label, exc) from None
