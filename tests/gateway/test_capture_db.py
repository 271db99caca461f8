"""The capture database's life cycle, on SQLite and PostgreSQL: the gateway (a real process)
refuses a schema that is out of date, naming the command that fixes it, and one it does not
know; ``gateway db upgrade`` / ``current`` on a fresh database; ``gateway db prune``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from capture.config import CaptureSettings
from capture.migrate import alembic_config, head, upgrade
from capture.prepare import Preparer
from capture.record import CallRecord
from gateway.cli import main
from gateway.ids import new_request_id
from tests.capture_support import (
    BACKENDS,
    ENV,
    Backend,
    BackendKind,
    Rows,
    capture_config,
    chat,
    gateway_sdk,
    open_backend,
    rows_of,
    serve_expecting_failure,
    write_config,
)
from tests.processes import Running, start_gateway

UNKNOWN_REVISION = "9f8e7d6c5b4a"


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


Cli = Callable[..., CliResult]


@pytest.fixture
def gateway_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """``gateway ARGS...`` run in this process (``gateway.cli.main``), saving the interpreter's
    start-up per command; ``gateway serve`` still runs as a process of its own."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:
            code = 0
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run


@pytest.fixture(scope="module", params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    kind: BackendKind = request.param
    with open_backend(kind, tmp_path_factory.mktemp(f"capture-db-{kind}"), __name__) as b:
        yield b


def config_file(backend: Backend, simulator_url: str, database_url: str) -> Path:
    return write_config(backend.workdir, capture_config(simulator_url, database_url))


def stamp(rows: Rows, revision: str) -> None:
    async def update() -> None:
        async with rows.store.engine.begin() as connection:
            await connection.execute(
                text("UPDATE alembic_version SET version_num = :revision"),
                {"revision": revision},
            )

    rows.run(update())


def revision(rows: Rows) -> str | None:
    async def query() -> str | None:
        async with rows.store.engine.connect() as connection:
            value = await connection.scalar(text("SELECT version_num FROM alembic_version"))
        return str(value) if value is not None else None

    return rows.run(query())


def old_record(seconds_ago: float) -> CallRecord:
    return CallRecord(
        id=new_request_id(),
        started_at=time.time() - seconds_ago,
        endpoint="chat",
        route="assistant",
        variant="teacher",
        provider="sim",
        requested_model="assistant",
        upstream_model="gpt-4o-mini",
        request_body=b'{"model": "assistant", "messages": [{"role": "user", "content": "hi"}]}',
        status=200,
        stream=False,
        total_ms=12.0,
        overhead_ms=0.3,
        response_body=b'{"choices": [{"message": {"role": "assistant", "content": "hello"}}]}',
    )


def test_the_gateway_refuses_a_database_at_a_revision_it_does_not_know(
    backend: Backend, simulator: Running, gateway_cli: Cli
) -> None:
    url = backend.new_url()
    config = config_file(backend, simulator.url, url)
    upgrade(url)
    with rows_of(url) as rows:
        stamp(rows, UNKNOWN_REVISION)

        code, output = serve_expecting_failure(config)

        assert code != 0, output
        assert UNKNOWN_REVISION in output
        assert "newer gateway" in output  # the fix: run the newer gateway that migrated it
        assert "Application startup complete" not in output
        assert revision(rows) == UNKNOWN_REVISION  # left alone

        refused = gateway_cli("db", "upgrade", "--config", str(config))
        assert refused.returncode == 2
        assert "cannot upgrade" in refused.stderr
        assert revision(rows) == UNKNOWN_REVISION


def test_db_current_does_not_advise_an_upgrade_for_an_unknown_revision(
    backend: Backend, simulator: Running, gateway_cli: Cli
) -> None:
    url = backend.new_url()
    config = config_file(backend, simulator.url, url)
    upgrade(url)
    with rows_of(url) as rows:
        stamp(rows, UNKNOWN_REVISION)
    result = gateway_cli("db", "current", "--config", str(config))
    assert UNKNOWN_REVISION in result.stdout
    assert "gateway db upgrade" not in result.stdout


def test_db_upgrade_and_current_on_a_fresh_database(
    backend: Backend, simulator: Running, gateway_cli: Cli
) -> None:
    url = backend.new_url()
    config = config_file(backend, simulator.url, url)

    upgraded = gateway_cli("db", "upgrade", "--config", str(config))
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"empty -> {head()}" in upgraded.stdout

    current = gateway_cli("db", "current", "--config", str(config))
    assert current.returncode == 0, current.stderr
    assert f"{head()}, up to date" in current.stdout


def test_the_gateway_refuses_an_out_of_date_database_and_names_the_command(
    backend: Backend, simulator: Running, gateway_cli: Cli
) -> None:
    oldest = ScriptDirectory.from_config(alembic_config()).get_base()
    assert oldest is not None
    if oldest == head():
        pytest.skip("the capture schema has a single revision: no database can be out of date")
    url = backend.new_url()
    config = config_file(backend, simulator.url, url)
    upgrade(url, oldest)

    code, output = serve_expecting_failure(config)

    assert code != 0, output
    assert f"run `gateway db upgrade --config {config}`" in output
    assert "Application startup complete" not in output

    upgraded = gateway_cli("db", "upgrade", "--config", str(config))
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"{oldest} -> {head()}" in upgraded.stdout
    # Now it starts on the database as it is (no initialising) and records into it.
    gw = start_gateway(backend.workdir, capture_config(simulator.url, url), env=ENV)
    try:
        request_id = chat(gateway_sdk(gw.url))
        with rows_of(url) as rows:
            assert rows.wait_for_call(request_id)["status"] == 200
    finally:
        gw.stop()
    assert "initialising the capture database" not in gw.log.read_text()


def test_db_prune_removes_old_calls_and_their_feedback(backend: Backend, gateway_cli: Cli) -> None:
    url = backend.new_url()
    config = config_file(backend, "http://127.0.0.1:9", url)
    upgrade(url)
    preparer = Preparer(CaptureSettings())
    old, older, recent = old_record(2 * 3600), old_record(3 * 3600), old_record(5)
    with rows_of(url) as rows:
        rows.run(rows.store.insert_calls([preparer.prepare(r).row for r in (old, older, recent)]))
        rows.run(rows.store.add_feedback(old.id, 1.0, "accepted"))
        rows.run(rows.store.add_feedback(recent.id, 0.5))

        hour = gateway_cli("db", "prune", "--older-than", "1h", "--config", str(config))
        assert hour.returncode == 0, hour.stderr
        assert "removed 2 call(s) older than 1h" in hour.stdout
        assert rows.ids([old.id, older.id, recent.id]) == {recent.id}
        assert rows.feedback(old.id) == []
        assert [f["score"] for f in rows.feedback(recent.id)] == [0.5]

        second = gateway_cli("db", "prune", "--older-than", "1s", "--config", str(config))
        assert second.returncode == 0, second.stderr
        assert "removed 1 call(s) older than 1s" in second.stdout
        assert rows.count() == 0
        assert rows.feedback(recent.id) == []
