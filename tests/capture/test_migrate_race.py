"""Several processes migrating a fresh database at once (replicas, or `--workers N`, starting on
an empty store) all succeed: SQLite's migration holds a file lock, PostgreSQL's an advisory
lock, and the later ones find the database at head."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from capture.migrate import current, head
from tests.capture_support import BACKENDS, Backend, BackendKind, open_backend

PROCESSES = 4
ROUNDS = 2


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind: BackendKind = request.param
    with open_backend(kind, tmp_path, __name__) as opened:
        yield opened


def test_processes_migrating_a_fresh_database_at_once_all_succeed(backend: Backend) -> None:
    script = "import sys; from capture.migrate import upgrade; upgrade(sys.argv[1])"
    for _ in range(ROUNDS):
        url = backend.new_url()
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", script, url],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for _ in range(PROCESSES)
        ]
        outputs = [
            (p.wait(timeout=120), p.stdout.read().decode() if p.stdout else "") for p in processes
        ]
        failed = [text for code, text in outputs if code != 0]
        assert not failed, failed[0][-2000:]
        assert current(url) == head()
