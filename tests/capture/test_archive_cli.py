"""``gateway db archive``: old partitions to Parquet files, then (``--drop``) out of the database;
on SQLite and PostgreSQL, to a folder and to a real S3 server (moto's, as its own process)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import yaml

from capture.archive_location import open_location, read_manifest
from capture.store import Store
from gateway.cli import main
from tests.capture.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server, s3_server
from tests.exporter.factory import START, chat_call


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


def _config(tmp_path: Path, database_url: str, archive: Mapping[str, object] | None) -> Path:
    capture: dict[str, object] = {"database_url": database_url}
    if archive is not None:
        capture["archive"] = archive
    config = {
        "auth": "none",
        "providers": {"sim": {"base_url": "http://127.0.0.1:9/v1"}},
        "routes": {"m": {"variants": {"t": {"provider": "sim", "model": "m"}}}},
        "capture": capture,
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _fill(url: str) -> int:
    rows = [chat_call(f"question {i}", "answer", minutes=i * 300.0) for i in range(20)]

    async def fill() -> None:
        store = await Store.connect(url)
        try:
            await store.insert_calls(rows)
            await store.add_feedback(rows[0]["id"], 1.0)
        finally:
            await store.close()

    asyncio.run(fill())
    return len(rows)


def _count(url: str) -> int:
    async def count() -> int:
        store = await Store.connect(url)
        try:
            return await store.count_calls()
        finally:
            await store.close()

    return asyncio.run(count())


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    else:
        code = 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_archive_then_drop_to_s3_with_keys_from_the_environment(
    database_url: str,
    s3: S3Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    total = _fill(database_url)  # 20 calls, 5 hours apart: 2026-11-01 to 2026-11-04
    s3.make_bucket("cli-archive")
    monkeypatch.setenv("ARCHIVE_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("ARCHIVE_SECRET", SECRET_KEY)
    archive = {
        "url": "s3://cli-archive/prod",
        "endpoint_url": s3.url,
        "region": REGION,
        "access_key_id": "${ARCHIVE_KEY_ID}",
        "secret_access_key": "${ARCHIVE_SECRET}",
    }
    config = str(_config(tmp_path, database_url, archive))

    code, out, err = _cli(capsys, "db", "archive", "--config", config,
                          "--before", "2026-11-03")  # fmt: skip
    assert (code, err) == (0, "")
    assert "calls-2026-11-01.parquet" in out and "calls-2026-11-02.parquet" in out
    assert "nothing dropped" in out and _count(database_url) == total
    assert ACCESS_KEY not in out and SECRET_KEY not in out

    code, out, err = _cli(capsys, "db", "archive", "--config", config,
                          "--before", "2026-11-03", "--drop")  # fmt: skip
    assert code == 0, err
    first_two_days = sum(1 for i in range(20) if START + dt.timedelta(minutes=i * 300) < START
                         + dt.timedelta(days=2))  # fmt: skip
    assert f"dropped {first_two_days} call(s)" in out
    assert _count(database_url) == total - first_two_days
    assert s3.keys("cli-archive") == [
        "prod/calls-2026-11-01.parquet",
        "prod/calls-2026-11-02.parquet",
        "prod/manifest.json",
    ]


def test_archive_to_a_folder_given_with_to(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    total = _fill(database_url)
    config = str(_config(tmp_path, database_url, None))
    folder = tmp_path / "archive"
    code, _, err = _cli(capsys, "db", "archive", "--config", config,
                          "--older-than", "1d", "--to", f"file://{folder}", "--drop")  # fmt: skip
    assert code == 0, err
    assert _count(database_url) == 0
    manifest = read_manifest(open_location(str(folder)))
    assert sum(entry.rows for entry in manifest) == total
    assert manifest[0].feedback == 1


@pytest.mark.parametrize(
    ("archive", "args", "says"),
    [
        (None, [], "no archive: give --to URL"),
        (None, ["--to", "file:///tmp/x"], "give --before DATE or --older-than"),
        ({"url": "file:///tmp/x"}, ["--before", "soon"], "give a date like 2026-11-01"),
        ({"url": "file:///tmp/x"}, ["--older-than", "3x"], "not a duration"),
        ({"url": "file:///tmp/x"}, ["--to", "ftp://h/x", "--before", "2026-11-01"], "s3://"),
    ],
)
def test_mistakes_are_one_line(
    sqlite_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    archive: dict[str, object] | None,
    args: list[str],
    says: str,
) -> None:
    config = str(_config(tmp_path, sqlite_url, archive))
    code, _, err = _cli(capsys, "db", "archive", "--config", config, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and says in err, err


def test_prune_refuses_to_delete_what_the_archive_should_keep(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With capture.archive set, `db prune` would delete training data unarchived: it says to
    archive with --drop instead, unless told --no-archive."""
    total = _fill(database_url)
    config = str(_config(tmp_path, database_url, {"url": (tmp_path / "archive").as_uri()}))
    code, _, err = _cli(capsys, "db", "prune", "--config", config, "--older-than", "1h")
    assert code != 0 and "gateway db archive --older-than 1h --drop" in err
    assert _count(database_url) == total
    code, out, err = _cli(
        capsys, "db", "prune", "--config", config, "--older-than", "1h", "--no-archive"
    )
    assert code == 0, err
    assert "removed" in out and _count(database_url) < total
