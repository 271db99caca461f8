"""The archive tier (``capture.archive``): ranges of calls to Parquet files on disk and on a real
S3-compatible server (moto's, as its own process), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from capture.archive import (
    SCHEMA,
    archive_and_prune,
    archive_before,
    archive_range,
    delete_archived,
    file_name,
    partition_archiver,
)
from capture.archive_location import (
    ArchiveError,
    LocalLocation,
    S3Location,
    S3Options,
    open_location,
    read_manifest,
)
from capture.config import ArchiveSettings, CaptureSettings
from capture.content import resolve_rows
from capture.partitions import drop_partitions_before
from capture.schema import calls
from capture.store import Store
from capture.writer import CaptureWriter
from tests.capture.s3_server import S3Server, s3_server
from tests.capture.test_content import ON, prepared, shapes

DAY1 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
DAY2 = DAY1 + dt.timedelta(days=1)
DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


_buckets = iter(range(1, 10_000))


@pytest.fixture(params=["file", "s3"])
def location(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[LocalLocation | S3Location]:
    if request.param == "file":
        yield open_location(f"file://{tmp_path / 'archive'}")
        return
    server: S3Server = request.getfixturevalue("s3")
    bucket = f"archive-{next(_buckets)}"
    server.make_bucket(bucket)
    yield open_location(f"s3://{bucket}/captures/prod", server.options())


def _run(url: str, scenario: Any) -> Any:
    async def go() -> Any:
        store = await Store.connect(url)
        try:
            return await scenario(store)
        finally:
            await store.close()

    return asyncio.run(go())


def _rows_over_two_days() -> list[dict[str, Any]]:
    """Every shape the capture stores, content store on (parts as references), half on each
    day, several at the same moment (ordered by id then)."""
    rows = prepared(shapes(), ON)
    for index, row in enumerate(rows):
        day = DAY1 if index % 2 == 0 else DAY2
        row["created_at"] = day + dt.timedelta(hours=1, minutes=index // 3)
    return rows


def _fill(url: str, rows: list[dict[str, Any]], scores: list[tuple[str, float]]) -> None:
    async def scenario(store: Store) -> None:
        await store.insert_calls(rows)
        for call_id, score in scores:
            await store.add_feedback(call_id, score, label="good", comment="thanks")

    _run(url, scenario)


def _database_rows(url: str, start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
    async def scenario(store: Store) -> list[dict[str, Any]]:
        query = (
            select(*calls.columns)
            .where(calls.c.created_at >= start, calls.c.created_at < end)
            .order_by(calls.c.created_at, calls.c.id)
        )
        async with store.engine.connect() as connection:
            rows = [dict(row) for row in (await connection.execute(query)).mappings()]
            await resolve_rows(connection, rows)
        return rows

    result: list[dict[str, Any]] = _run(url, scenario)
    return result


def _file_rows(location: LocalLocation | S3Location, name: str, folder: Path) -> list[Any]:
    path = folder / name
    location.download(name, path)
    table = pq.read_table(path)
    assert table.schema.equals(SCHEMA)
    return table.to_pylist()


def _dump(value: Any) -> bytes:
    return orjson.dumps(value, default=str)


def test_a_range_holds_every_column_with_parts_resolved_and_its_feedback(
    database_url: str, location: LocalLocation | S3Location, tmp_path: Path
) -> None:
    rows = _rows_over_two_days()
    scored = [(rows[0]["id"], 1.0), (rows[0]["id"], 0.5), (rows[2]["id"], -1.0)]
    _fill(database_url, rows, scored)
    expected = _database_rows(database_url, DAY1, DAY2)

    async def scenario(store: Store) -> Any:
        return await archive_range(store.engine, location, DAY1, DAY2, page_size=4)

    entry = _run(database_url, scenario)
    assert entry.name == "calls-2026-11-02.parquet"
    assert (entry.rows, entry.feedback) == (len(expected), 3)
    archived = _file_rows(location, entry.name, tmp_path)
    assert [row["id"] for row in archived] == [row["id"] for row in expected]
    for got, want in zip(archived, expected, strict=True):
        want.pop("content_refs", None)
        for name in ("request", "response", "normalized", "tags"):
            text = got.pop(name)
            stored = want.pop(name)
            # The JSON text is the resolved value, its keys in the order the database gave.
            assert text == (None if stored is None else _dump(stored).decode())
            assert not re.search(r'"\$ref":"[0-9a-f]{64}"', text or "")
        feedback = got.pop("feedback")
        assert got == want
        expected_scores = [score for call_id, score in scored if call_id == want["id"]]
        assert [item["score"] for item in feedback] == expected_scores
        assert all(item["label"] == "good" and item["comment"] == "thanks" for item in feedback)
    manifest = read_manifest(location)
    assert [item.name for item in manifest] == [entry.name]
    body = location.get_bytes(entry.name)
    assert body is not None and hashlib.sha256(body).hexdigest() == entry.sha256
    assert len(body) == entry.bytes


def test_archiving_again_replaces_the_file_and_its_manifest_entry(
    database_url: str, location: LocalLocation | S3Location
) -> None:
    rows = _rows_over_two_days()
    _fill(database_url, rows[:4], [])

    async def twice(store: Store) -> Any:
        first = await archive_range(store.engine, location, DAY1, DAY2)
        await store.insert_calls(rows[4:])
        second = await archive_range(store.engine, location, DAY1, DAY2)
        other = await archive_range(store.engine, location, DAY2, DAY2 + DAY)
        return first, second, other

    first, second, other = _run(database_url, twice)
    assert second.rows > first.rows
    manifest = read_manifest(location)
    assert [item.name for item in manifest] == [first.name, other.name]
    assert manifest[0].rows == second.rows and manifest[0].sha256 == second.sha256
    if isinstance(location, LocalLocation):
        assert sorted(p.name for p in location.base.iterdir()) == [
            first.name,
            other.name,
            "manifest.json",
        ]


def test_archiving_a_range_again_after_its_calls_were_dropped_keeps_them_and_adds_late_ones(
    database_url: str, location: LocalLocation | S3Location, tmp_path: Path
) -> None:
    rows = _rows_over_two_days()
    on_day1 = [row for row in rows if row["created_at"] < DAY2]
    late = dict(on_day1[-1], id="f" * 32)  # a call of DAY1 that arrives after the drop
    _fill(database_url, rows, [(on_day1[0]["id"], 0.5)])

    async def scenario(store: Store) -> Any:
        entry = await archive_range(store.engine, location, DAY1, DAY2)
        deleted = await delete_archived(store.engine, entry, entry.rows)
        again = await archive_range(store.engine, location, DAY1, DAY2)
        await store.insert_calls([late])
        with_late = await archive_range(store.engine, location, DAY1, DAY2, page_size=3)
        return entry, deleted, again, with_late

    entry, deleted, again, with_late = _run(database_url, scenario)
    assert deleted == entry.rows == len(on_day1)
    assert (again.rows, again.feedback, again.sha256) == (entry.rows, 1, entry.sha256)
    assert (with_late.rows, with_late.feedback) == (entry.rows + 1, 1)
    records = _file_rows(location, with_late.name, tmp_path)
    expected = sorted([*on_day1, late], key=lambda row: (row["created_at"], row["id"]))
    assert [record["id"] for record in records] == [row["id"] for row in expected]
    assert [item.name for item in read_manifest(location)] == [entry.name]


def test_a_call_written_into_the_range_after_archiving_stops_the_delete(
    database_url: str, tmp_path: Path
) -> None:
    rows = _rows_over_two_days()
    location = open_location(str(tmp_path / "archive"))
    _fill(database_url, rows[1:], [])

    async def scenario(store: Store) -> int:
        entry = await archive_range(store.engine, location, DAY1, DAY2)
        await store.insert_calls(rows[:1])  # late: on DAY1
        with pytest.raises(ArchiveError, match="nothing was deleted"):
            await delete_archived(store.engine, entry, entry.rows)
        return await store.count_calls()

    assert _run(database_url, scenario) == len(rows)


def test_archive_before_writes_whole_ranges_and_leaves_the_database(
    database_url: str, tmp_path: Path
) -> None:
    rows = _rows_over_two_days()
    _fill(database_url, rows, [])
    location = open_location(f"file://{tmp_path / 'archive'}")

    async def scenario(store: Store) -> Any:
        # Mid-DAY2: only DAY1 is wholly before it.
        files = await archive_before(store.engine, location, DAY2 + dt.timedelta(hours=12))
        return files, await store.count_calls()

    files, count = _run(database_url, scenario)
    assert [item.name for item in files] == ["calls-2026-11-02.parquet"]
    assert count == len(rows)


def test_archive_and_prune_drops_only_what_was_archived(
    database_url: str, location: LocalLocation | S3Location, tmp_path: Path
) -> None:
    rows = _rows_over_two_days()
    _fill(database_url, rows, [(rows[0]["id"], 1.0)])
    before = _database_rows(database_url, DAY1, DAY2 + DAY)

    async def scenario(store: Store) -> Any:
        pruned = await archive_and_prune(store.engine, location, DAY2 + DAY)
        return pruned, await store.count_calls()

    pruned, left = _run(database_url, scenario)
    assert left == 0
    assert [item.name for item in pruned.archived] == [
        "calls-2026-11-02.parquet",
        "calls-2026-11-03.parquet",
    ]
    assert pruned.calls == len(rows)
    archived = [
        row["id"] for item in pruned.archived for row in _file_rows(location, item.name, tmp_path)
    ]
    assert archived == [row["id"] for row in before]


def test_a_failed_archive_write_drops_nothing(database_url: str, s3: S3Server) -> None:
    rows = _rows_over_two_days()
    _fill(database_url, rows, [])
    location = open_location("s3://no-such-bucket/x", s3.options())

    async def scenario(store: Store) -> int:
        with pytest.raises(ArchiveError, match="no-such-bucket"):
            await archive_and_prune(store.engine, location, DAY2 + DAY)
        return await store.count_calls()

    assert _run(database_url, scenario) == len(rows)


def test_names_follow_the_range() -> None:
    assert file_name(DAY1, DAY2) == "calls-2026-11-02.parquet"
    month = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert file_name(month, dt.datetime(2027, 1, 1, tzinfo=dt.UTC)) == "calls-2026-12.parquet"
    assert (
        file_name(DAY1, DAY1 + dt.timedelta(hours=6))
        == "calls-20261102T000000Z-20261102T060000Z.parquet"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/x", "scheme must be file:// or s3://"),
        ("s3:///prefix", "has no bucket"),
        ("file://otherhost/x", "give file:///absolute/path"),
    ],
)
def test_bad_archive_urls_are_named(url: str, message: str) -> None:
    with pytest.raises(ArchiveError, match=message):
        open_location(url, S3Options())


def test_an_unreachable_s3_server_is_one_line_without_the_keys(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="missing: aws_secret_access_key"):
        open_location("s3://bucket/p", S3Options(access_key_id="AKIDSECRET1"))
    options = S3Options(
        endpoint_url="http://127.0.0.1:9",
        region="us-east-1",
        access_key_id="AKIDSECRET1",
        secret_access_key="SECRETSECRET2",
    )
    location = open_location("s3://bucket/p", options)
    with pytest.raises(ArchiveError) as caught:
        read_manifest(location)
    assert "s3://bucket/p/manifest.json" in str(caught.value)
    assert "AKIDSECRET1" not in str(caught.value)
    assert "SECRETSECRET2" not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_partition_archiver_is_the_drops_before_drop(database_url: str, tmp_path: Path) -> None:
    rows = _rows_over_two_days()
    _fill(database_url, rows, [])
    location = open_location(str(tmp_path / "archive"))

    async def scenario(store: Store) -> Any:
        hook = partition_archiver(store.engine, location)
        return await drop_partitions_before(store.engine, DAY2 + DAY, hook)

    result = _run(database_url, scenario)
    assert result.calls == len(rows)
    manifest = read_manifest(location)
    assert [item.name for item in manifest] == [
        "calls-2026-11-02.parquet",
        "calls-2026-11-03.parquet",
    ]
    assert sum(item.rows for item in manifest) == len(rows)


def test_the_writers_retention_archives_before_it_drops(database_url: str, tmp_path: Path) -> None:
    rows = _rows_over_two_days()
    _fill(database_url, rows, [])
    folder = tmp_path / "archive"
    settings = CaptureSettings(
        database_url=database_url,
        retention_days=1,
        archive=ArchiveSettings(url=f"file://{folder}"),
    )
    unreachable = ArchiveSettings(
        url="s3://bucket/x",
        endpoint_url="http://127.0.0.1:9",
        region="us-east-1",
        access_key_id="AKID",
        secret_access_key="SECRET",
    )
    broken = CaptureSettings(database_url=database_url, retention_days=1, archive=unreachable)

    async def scenario(store: Store) -> Any:
        now = DAY2 + 3 * DAY
        failing = CaptureWriter(store, broken).maintenance
        assert failing is not None
        with pytest.raises(ArchiveError):
            await failing.run_once(now=now)
        kept = await store.count_calls()
        maintenance = CaptureWriter(store, settings).maintenance
        assert maintenance is not None
        done = await maintenance.run_once(now=now)
        return kept, done, await store.count_calls()

    kept, done, left = _run(database_url, scenario)
    assert kept == len(rows)
    assert done.retention is not None and done.retention.calls == len(rows) and left == 0
    manifest = read_manifest(open_location(str(folder)))
    assert sum(item.rows for item in manifest) == len(rows)


@pytest.mark.parametrize(
    "name",
    ["../calls-2026-11-01.parquet", "/etc/passwd", "calls-2026/../../x.parquet", "x.parquet"],
)
def test_a_manifest_naming_a_path_is_refused(tmp_path: Path, name: str) -> None:
    """A manifest written by someone else names files that are read as paths and downloaded
    under their name: anything but an archive file's name is an error, not a path."""
    entry = {
        "name": name, "start": "2026-11-01T00:00:00+00:00", "end": "2026-11-02T00:00:00+00:00",
        "rows": 1, "bytes": 1, "sha256": "0" * 64, "archived_at": "2026-11-03T00:00:00+00:00",
    }  # fmt: skip
    (tmp_path / "manifest.json").write_bytes(orjson.dumps({"version": 1, "files": [entry]}))
    with pytest.raises(ArchiveError, match="not an archive file's"):
        read_manifest(open_location(f"file://{tmp_path}"))
    entry["name"] = "calls-2026-11-01.parquet"
    (tmp_path / "manifest.json").write_bytes(orjson.dumps({"version": 1, "files": [entry]}))
    assert [found.name for found in read_manifest(open_location(f"file://{tmp_path}"))] == [
        "calls-2026-11-01.parquet"
    ]
