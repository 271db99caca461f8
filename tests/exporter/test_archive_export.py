"""Export and eval's selection read the archive and the database together, with the same filters:
the files of an export are the same, byte for byte, before and after the old calls were archived
and dropped; on SQLite and PostgreSQL, the archive on disk and on a real S3 server (moto's)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

import capture.archive
import exporter.archive_source
import exporter.workers
from capture.archive import PAGE_SIZE, archive_and_prune, archive_before
from capture.archive_location import ArchiveError, LocalLocation, S3Location, open_location
from capture.migrate import upgrade
from capture.store import Store
from exporter.archive_listing import listed_apart
from exporter.archive_source import ArchiveSource
from exporter.cli import main
from exporter.evaluate.held_out import held_out
from exporter.filters import Filters
from exporter.pipeline import ExportOptions, run_export
from exporter.preference import run_preference_export
from exporter.selection import fetch_by_ids, stream_pages
from tests.capture.s3_server import S3Server, s3_server
from tests.exporter.factory import START, chat_call, questions

PG_ADMIN = os.environ.get(
    "EXPORTER_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
DAY = dt.timedelta(days=1)
CUTOFF = START + 2 * DAY
"""The first two days are archived and dropped; the third stays in the database."""


def calls() -> tuple[list[dict[str, Any]], list[tuple[str, float]]]:
    """Three days of calls: two routes, tags, feedback, shadow copies, near-duplicates, several
    at one moment, some refused by the default filters."""
    rows: list[dict[str, Any]] = []
    scores: list[tuple[str, float]] = []
    prompts = questions(60, seed=15)
    for index, prompt in enumerate(prompts):
        minutes = index * 67.0 if index % 10 else (index - 1) * 67.0  # ties on created_at
        route = "billing" if index % 7 == 0 else "support"
        tags = {"team": "eu" if index % 3 else "us", "tier": "gold"} if index % 4 else None
        row = chat_call(
            prompt,
            f"Answer {index}: {prompt[::-1]}",
            route=route,
            tags=tags,
            minutes=minutes,
            call_id=f"{index:02d}{'0' * 28}{index:02d}",
        )
        rows.append(row)
        if index % 5 == 0:
            scores.append((row["id"], 1.0 if index % 2 else -0.5))
        if index % 6 == 0:
            shadow = chat_call(
                prompt,
                "A shadow's answer.",
                variant="student",
                shadow_of=row["id"],
                minutes=minutes + 0.5,
            )
            rows.append(shadow)
            scores += [(row["id"], 1.0), (shadow["id"], -1.0)]
    rows.append(chat_call(prompts[1] + " ", "Answer 1 again", minutes=5.0))  # an exact twin
    rows.append(chat_call("failed", "x", status=500, minutes=100.0))
    rows.append(chat_call("cut", "x", finish_reason="length", minutes=200.0))
    return rows, scores


def _fill(url: str) -> None:
    rows, scores = calls()

    async def fill() -> None:
        store = await Store.connect(url)
        try:
            await store.insert_calls(rows)
            for call_id, score in scores:
                await store.add_feedback(call_id, score)
        finally:
            await store.close()

    asyncio.run(fill())


async def _admin(statement: str) -> None:
    admin = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        target = f"sqlite+aiosqlite:///{tmp_path / 'capture.db'}"
        upgrade(target)
        _fill(target)
        yield target
        return
    name = f"exporter_archive_{os.getpid()}"
    try:
        asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        asyncio.run(_admin(f"CREATE DATABASE {name}"))
    except Exception as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    target = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    upgrade(target)
    _fill(target)
    yield target
    asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


_buckets = itertools.count()


@pytest.fixture(params=["file", "s3"])
def archive_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "file":
        yield f"file://{tmp_path / 'archive'}"
        return
    server: S3Server = request.getfixturevalue("s3")
    bucket = f"export-{next(_buckets)}"
    server.make_bucket(bucket)
    env = {
        "AWS_ENDPOINT_URL": server.url,
        "AWS_ACCESS_KEY_ID": "test-archive-key",
        "AWS_SECRET_ACCESS_KEY": "test-archive-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # as a user would: boto3 reads them (the CLI runs in this process)
    try:
        yield f"s3://{bucket}/captures"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _location(archive_url: str) -> LocalLocation | S3Location:
    return open_location(archive_url)


def _source(archive_url: str) -> ArchiveSource:
    return ArchiveSource(_location(archive_url), batch_size=5)


FILTER_SETS = {
    "default": Filters(),
    "route and tag": Filters(route="support", tags={"team": "eu"}),
    "feedback": Filters(min_feedback=0.5),
    "window": Filters(since=START + DAY + dt.timedelta(hours=3), until=START + 2 * DAY + DAY / 2),
    "tokens and shadow": Filters(shadow="include", min_tokens=1, max_tokens=1000),
}


def _export(
    url: str,
    out: Path,
    filters: Filters,
    archive: ArchiveSource | None,
    workers: int | None = None,
) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        store = await Store.connect(url)
        try:
            options = ExportOptions(
                filters=filters, out_dir=out, page_size=7, archive=archive, workers=workers
            )
            result = await run_export(store.engine, options)
        finally:
            await store.close()
        return result.report

    built: dict[str, Any] = asyncio.run(go())
    return built


def _files(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ("train.jsonl", "valid.jsonl")}


def _prune(url: str, archive_url: str, page_size: int = PAGE_SIZE) -> int:
    async def go() -> int:
        store = await Store.connect(url)
        try:
            location = _location(archive_url)
            pruned = await archive_and_prune(store.engine, location, CUTOFF, page_size=page_size)
            return pruned.calls
        finally:
            await store.close()

    return asyncio.run(go())


def _count(url: str) -> int:
    async def go() -> int:
        store = await Store.connect(url)
        try:
            return await store.count_calls()
        finally:
            await store.close()

    return asyncio.run(go())


def test_an_export_is_the_same_before_and_after_archiving_and_dropping(
    url: str, archive_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if archive_url.startswith("s3"):  # the files downloaded here, listed by a process
        monkeypatch.setattr(exporter.archive_source, "LIST_APART_CALLS", 0)
    before = {}
    for name, filters in FILTER_SETS.items():
        report = _export(url, tmp_path / "before" / name.replace(" ", "-"), filters, None)
        before[name] = (report["selected"], _files(tmp_path / "before" / name.replace(" ", "-")))
    total = _count(url)
    dropped = _prune(url, archive_url)
    assert 0 < dropped < total and _count(url) == total - dropped
    for name, filters in FILTER_SETS.items():
        out = tmp_path / "after" / name.replace(" ", "-")
        report = _export(url, out, filters, _source(archive_url))
        assert (report["selected"], _files(out)) == before[name], name
    # Without the archive, the dropped calls are gone: the check above could fail.
    out = tmp_path / "database-only"
    assert _export(url, out, Filters(), None)["selected"] < before["default"][0]


def test_workers_read_archived_row_groups_once_each_and_export_the_same(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small row groups (of about 10 calls; pages of 7): pages that share a group go to one
    worker as a job, a page that straddles two reads both, and the export is the same."""
    if not url.startswith("sqlite"):
        pytest.skip("the archive reads the same whichever database it was archived from")
    monkeypatch.setattr(capture.archive, "ROW_GROUP_ROWS", 10)
    monkeypatch.setattr(exporter.workers, "INLINE_CALLS", 0)
    monkeypatch.setattr(exporter.archive_source, "LIST_APART_CALLS", 0)
    archive_url = f"file://{tmp_path / 'archive'}"
    names = ("default", "route and tag", "feedback", "window")
    before = {}
    for name in names:
        out = tmp_path / "before" / name.replace(" ", "-")
        before[name] = (_export(url, out, FILTER_SETS[name], None, 0)["selected"], _files(out))
    assert _prune(url, archive_url, page_size=3) > 0
    files = [pq.ParquetFile(path) for path in (tmp_path / "archive").glob("calls-*.parquet")]
    assert max(file.metadata.num_row_groups for file in files) >= 3
    for name in names:
        out = tmp_path / "after" / name.replace(" ", "-")
        report = _export(url, out, FILTER_SETS[name], _source(archive_url), 2)
        assert (report["selected"], _files(out)) == before[name], name


def test_a_call_both_archived_and_in_the_database_is_read_once(url: str, tmp_path: Path) -> None:
    archive_url = f"file://{tmp_path / 'archive'}"
    expected = _export(url, tmp_path / "before", Filters(), None)

    async def archive_all() -> None:
        store = await Store.connect(url)
        try:
            await archive_before(store.engine, _location(archive_url), START + 10 * DAY)
        finally:
            await store.close()

    asyncio.run(archive_all())
    got = _export(url, tmp_path / "after", Filters(), _source(archive_url))
    assert got["selected"] == expected["selected"]
    assert _files(tmp_path / "after") == _files(tmp_path / "before")


def _pages(url: str, filters: Filters, archive: ArchiveSource | None, size: int) -> list[Any]:
    async def go() -> list[Any]:
        store = await Store.connect(url)
        try:
            return [
                [row["id"] for row in page]
                async for page in stream_pages(store.engine, filters, size, 23, archive)
            ]
        finally:
            await store.close()

    result: list[Any] = asyncio.run(go())
    return result


def test_pages_and_limit_are_the_same_whichever_side_holds_a_call(url: str, tmp_path: Path) -> None:
    archive_url = f"file://{tmp_path / 'archive'}"
    filters = Filters(shadow="include")
    before = _pages(url, filters, None, 4)
    _prune(url, archive_url)
    assert _pages(url, filters, _source(archive_url), 4) == before
    assert len([call for page in before for call in page]) == 23


def test_pairs_eval_and_lookups_by_id_reach_archived_calls(url: str, tmp_path: Path) -> None:
    archive_url = f"file://{tmp_path / 'archive'}"

    async def run(archive: ArchiveSource | None) -> Any:
        store = await Store.connect(url)
        try:
            options = ExportOptions(out_dir=None, archive=archive, page_size=5)
            pairs = await run_preference_export(store.engine, options, "shadow", 0.5, None)
            filters = Filters(route="support", variant="teacher")
            items, eligible = await held_out(store.engine, filters, 50, 0.5, "s", archive=archive)
            ids = [f"{index:02d}{'0' * 28}{index:02d}" for index in (0, 6, 59)]
            found = await fetch_by_ids(store.engine, ids, archive)
            return (
                pairs.report["selected"],
                sorted(item.call_id for item in items),
                eligible,
                {key: found[key]["request"] for key in sorted(found)},
            )
        finally:
            await store.close()

    before = asyncio.run(run(None))
    _prune(url, archive_url)
    assert asyncio.run(run(_source(archive_url))) == before
    assert asyncio.run(run(None)) != before


def test_the_cli_reads_the_archive_given_or_configured(
    url: str, archive_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["export", "--database-url", url, "--page-size", "7"]
    assert main([*args, "--out", str(tmp_path / "before")]) == 0
    _prune(url, archive_url)
    assert main([*args, "--out", str(tmp_path / "given"), "--archive", archive_url]) == 0
    config = tmp_path / "gateway.yaml"
    config.write_text(f"capture:\n  database_url: {url}\n  archive:\n    url: {archive_url}\n")
    configured = ["export", "--config", str(config), "--page-size", "7"]
    assert main([*configured, "--out", str(tmp_path / "configured")]) == 0
    assert _files(tmp_path / "given") == _files(tmp_path / "before")
    assert _files(tmp_path / "configured") == _files(tmp_path / "before")
    assert main([*configured, "--out", str(tmp_path / "off"), "--archive", "off"]) == 0
    assert _files(tmp_path / "off") != _files(tmp_path / "before")
    capsys.readouterr()


def test_an_unreadable_archive_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"sqlite+aiosqlite:///{tmp_path / 'capture.db'}"
    upgrade(target)
    _fill(target)
    folder = tmp_path / "archive"
    _prune(target, f"file://{folder}")
    archived = sorted(folder.glob("calls-*.parquet"))
    table = pq.read_table(archived[-1])
    broken = ["{not json"] * table.num_rows
    position = table.schema.get_field_index("request")
    table = table.set_column(position, table.schema.field(position), pa.array(broken))
    pq.write_table(table, archived[-1])  # reads as Parquet, its JSON does not parse
    out = str(tmp_path / "out")
    code = main(["export", "--database-url", target, "--out", out, "--archive", str(folder)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "cannot read" in err[0] and "calls-" in err[0]
    archived[-1].write_bytes(b"not parquet")
    code = main(["export", "--database-url", target, "--out", out, "--archive", str(folder)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "cannot read" in err[0] and "calls-" in err[0]
    assert main(["export", "--database-url", target, "--out", out, "--archive", "ftp://x"]) == 1
    assert "file:// or s3://" in capsys.readouterr().err
    with pytest.raises(ArchiveError):
        open_location("s3://")


def _keys(archive: ArchiveSource, filters: Filters, folder: Path) -> list[Any]:
    async def go() -> list[Any]:
        return [batch async for batch in archive.keys(filters, folder)]

    result: list[Any] = asyncio.run(go())
    return result


def test_keys_listed_by_a_process_of_their_own_are_those_listed_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = f"sqlite+aiosqlite:///{tmp_path / 'capture.db'}"
    upgrade(target)
    _fill(target)
    monkeypatch.setattr(capture.archive, "ROW_GROUP_ROWS", 10)
    archive_url = f"file://{tmp_path / 'archive'}"
    assert _prune(target, archive_url, page_size=3) > 0
    for name, filters in FILTER_SETS.items():
        in_thread = _keys(_source(archive_url), filters, tmp_path)
        monkeypatch.setattr(exporter.archive_source, "LIST_APART_CALLS", 0)
        apart = _keys(_source(archive_url), filters, tmp_path)
        monkeypatch.undo()
        assert apart == in_thread and len(in_thread) >= 2, name
        assert not list(tmp_path.glob("*.frames")), "the listing's file is left behind"

    files = [(str(path), path.name) for path in sorted(tmp_path.glob("archive/*.parquet"))]

    async def broken_off() -> list[Any]:  # as an export that reached its --limit
        listing = listed_apart(files, Filters(), tmp_path)
        first = await anext(listing)
        await listing.aclose()
        return first

    assert asyncio.run(broken_off())
    assert not [p for p in multiprocessing.active_children() if p.name == "export-listing"]
    assert not list(tmp_path.glob("*.frames"))


def test_a_listing_process_that_fails_or_dies_is_an_error(tmp_path: Path) -> None:
    async def first(files: list[tuple[str, str]]) -> Any:
        return [batch async for batch in listed_apart(files, Filters(), tmp_path)]

    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(ArchiveError, match=r"^cannot read file:///a/bad.parquet: ") as raised:
        asyncio.run(first([(str(tmp_path / "bad.parquet"), "file:///a/bad.parquet")]))
    assert "\n" not in str(raised.value)

    fifo = tmp_path / "blocked.parquet"
    os.mkfifo(fifo)  # opening it for reading waits for a writer that never comes

    async def killed() -> None:
        listing = asyncio.ensure_future(first([(str(fifo), "file:///a/blocked.parquet")]))
        for _ in range(3000):  # until the process is there
            started = [p for p in multiprocessing.active_children() if p.name == "export-listing"]
            if started:
                break
            await asyncio.sleep(0.01)
        for process in started:
            process.kill()
        await listing

    with pytest.raises(ArchiveError, match="stopped before its end"):
        asyncio.run(killed())
    assert not [p for p in multiprocessing.active_children() if p.name == "export-listing"]


NO_PYARROW = """
import asyncio, sys
import exporter.archive_source, exporter.workers
from capture.store import Store
from exporter.archive_source import open_archive
from exporter.pipeline import ExportOptions, run_export

exporter.archive_source.LIST_APART_CALLS = 0
exporter.workers.INLINE_CALLS = 0

async def go():
    store = await Store.connect(sys.argv[1])
    try:
        archive = open_archive(sys.argv[2])
        options = ExportOptions(out_dir=None, archive=archive, workers=2, page_size=7)
        return (await run_export(store.engine, options)).report["selected"]
    finally:
        await store.close()

selected = asyncio.run(go())
assert "pyarrow" not in sys.modules, "the export's process loaded pyarrow"
print(selected)
"""


def test_the_exports_process_never_loads_pyarrow_when_others_read_the_archive(
    tmp_path: Path,
) -> None:
    target = f"sqlite+aiosqlite:///{tmp_path / 'capture.db'}"
    upgrade(target)
    _fill(target)
    archive_url = f"file://{tmp_path / 'archive'}"
    assert _prune(target, archive_url) > 0
    done = subprocess.run(
        [sys.executable, "-c", NO_PYARROW, target, archive_url],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = _export(target, tmp_path / "in-one", Filters(), _source(archive_url))
    assert int(done.stdout) == report["selected"] > 0
